-- A ComfyUI /ws client's unfinished prompts, found at its connect by its client id without
-- looking at every other unfinished job (JobStore.unfinished_for_client).
CREATE INDEX jobs_comfy_client ON jobs (json_extract(metadata, '$.comfy_client_id'))
    WHERE status IN ('queued', 'running', 'canceling');
