-- When ComfyUI started a job's prompt (its execution_start): a claimed job whose prompt waits
-- in a backend's queue is shown queued until then, and queue_ms / execution_ms split there.
ALTER TABLE jobs ADD COLUMN execution_started_at REAL;
