// The TechEmpower database tests the way a Fastify user writes them: a pg
// Pool per worker process, prepared (named) statements, node:cluster for
// the workers. Usage: PORT=… DATABASE_URL=… WORKERS=1 node server.js
'use strict';
const cluster = require('node:cluster');

const WORKERS = Number(process.env.WORKERS || 1);

if (cluster.isPrimary) {
  for (let i = 0; i < WORKERS; i++) cluster.fork();
  cluster.on('exit', () => process.exit(1));
} else {
  const fastify = require('fastify')({ logger: false });
  const { Pool } = require('pg');
  const pool = new Pool({ connectionString: process.env.DATABASE_URL, max: Number(process.env.POOL_SIZE || 10) });

  const randomId = () => 1 + Math.floor(Math.random() * 10000);
  const count = (raw) => {
    const n = Number.parseInt(raw, 10);
    if (Number.isNaN(n) || n < 1) return 1;
    return n > 500 ? 500 : n;
  };
  const world = async () => {
    const { rows } = await pool.query({ name: 'world', text: 'SELECT id, randomnumber FROM world WHERE id = $1', values: [randomId()] });
    return { id: rows[0].id, randomNumber: rows[0].randomnumber };
  };
  const escape = (s) => s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]);
  let cache = null;

  fastify.get('/bench/db', async () => world());
  fastify.get('/bench/queries', async (req) => Promise.all(Array.from({ length: count(req.query.queries) }, world)));
  fastify.get('/bench/updates', async (req) => {
    const worlds = await Promise.all(Array.from({ length: count(req.query.queries) }, world));
    const latest = new Map();
    for (const w of worlds) { w.randomNumber = randomId(); latest.set(w.id, w.randomNumber); }
    for (const w of worlds) w.randomNumber = latest.get(w.id);
    // One statement, the same drover sends: a join on a VALUES list.
    const values = [];
    const rows = [];
    for (const [id, n] of latest) {
      values.push(id, n);
      const [a, b] = [values.length - 1, values.length];
      rows.push(rows.length === 0 ? `(CAST($${a} AS INTEGER), CAST($${b} AS INTEGER))` : `($${a}, $${b})`);
    }
    await pool.query(`UPDATE world SET randomnumber = v.r FROM (VALUES ${rows.join(', ')}) AS v (id, r) WHERE world.id = v.id`, values);
    return worlds;
  });
  fastify.get('/bench/fortunes', async (req, reply) => {
    const { rows } = await pool.query({ name: 'fortunes', text: 'SELECT id, message FROM fortune' });
    rows.push({ id: 0, message: 'Additional fortune added at request time.' });
    rows.sort((a, b) => (a.message < b.message ? -1 : a.message > b.message ? 1 : 0));
    const body = '<!DOCTYPE html><html><head><title>Fortunes</title></head><body><table><tr><th>id</th><th>message</th></tr>' +
      rows.map((f) => `<tr><td>${f.id}</td><td>${escape(f.message)}</td></tr>`).join('') + '</table></body></html>';
    reply.header('content-type', 'text/html; charset=utf-8');
    return body;
  });
  fastify.get('/bench/cached-queries', async (req) => {
    if (!cache) {
      const { rows } = await pool.query('SELECT id, randomnumber FROM world ORDER BY id');
      cache = rows.map((r) => ({ id: r.id, randomNumber: r.randomnumber }));
    }
    return Array.from({ length: count(req.query.count) }, () => cache[randomId() - 1]);
  });
  fastify.listen({ port: Number(process.env.PORT), host: '127.0.0.1' }).catch((e) => { console.error(e); process.exit(1); });
}
