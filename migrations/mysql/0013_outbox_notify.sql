-- PostgreSQL only (a trigger that notifies listening job processes): on
-- this backend job processes poll the outbox. Kept so that every backend
-- has the same versions.
SELECT 1;
