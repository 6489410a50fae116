"""The durable job queue.

base.py         the JobStore protocol, Changes, JobEvent, JobPage
factory.py      open_store(url): memory:// | sqlite:///path.db | postgresql://…?schema=s
memory.py       MemoryStore, dicts and asyncio conditions (tests, throwaway servers)
sqlstore.py     SQLStore, every method written once over named queries
sqlite.py       SQLiteStore: WAL, BEGIN IMMEDIATE, bounded cross-process waits
sqlite_runner.py  its calls in batches: quick ones on the loop, their commit on its thread
sqlite_statements.py  its statements: a call's savepoint, few statements a job (events in one)
postgres.py     PostgresStore: pool, FOR UPDATE SKIP LOCKED, LISTEN/NOTIFY
pgstatements.py its one-statement enqueue, claim and job end; its queries and NOTIFY payloads
transition.py   the pure plan of a status change (what each event writes)
maintenance.py  lease sweeping, stuck-job requeue, expiry (pure step + CAS write)
idempotency.py  the Idempotency-Key rule (24 h, per owner)
codec.py        Job and its parts <-> JSON-able dicts (shared with the API), cursors
migrate.py      numbered migrations in sql/<dialect>/, schema_version
queries.py      named queries from sql/<dialect>/queries.sql
"""
