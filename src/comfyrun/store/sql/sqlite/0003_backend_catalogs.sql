-- Each backend's node definitions and model lists (GET /object_info, /models, /embeddings,
-- /features), kept so that ComfyUI clients are answered before any backend is up.
CREATE TABLE backend_catalogs (
    backend         TEXT PRIMARY KEY,
    comfyui_version TEXT,
    fetched_at      REAL NOT NULL,
    object_info     TEXT NOT NULL,
    models          TEXT NOT NULL DEFAULT '{}',
    embeddings      TEXT NOT NULL DEFAULT '[]',
    features        TEXT NOT NULL DEFAULT '{}'
);
