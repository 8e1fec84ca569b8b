-- Tells listening job processes that the outbox has news: a notification
-- per statement that inserts events, delivered when its transaction commits
-- (never if it rolls back). Done by the database so that the transactions
-- writing events pay no extra round trip. See src/repo/postgres/listen.rs.
CREATE OR REPLACE FUNCTION drover_outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('drover_outbox', '');
    RETURN NULL;
END
$$;
DROP TRIGGER IF EXISTS outbox_notify ON outbox;
CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION drover_outbox_notify();
