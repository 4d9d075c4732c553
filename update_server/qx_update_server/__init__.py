"""qx-update-server: sign Quantix OS releases and publish them as a static TUF repository.

Design (docs/update-format.md section 2 is the contract with the OTA client):

* What hosts download is **static files** under ``<data-dir>/repository/{metadata,targets}``. Any web
  server, CDN or USB stick can carry them (``qx-release export``); this server only signs and manages,
  and can be down without stopping updates that are already published.
* Modules, one concern each:

  - :mod:`.contract`   — the size budget and retention limits; the release contract itself (channels,
    ``custom.quantix``) is :mod:`qx_update.contract`, the client's, imported here.
  - :mod:`.release`    — reading and verifying a build's release files (manifest + SHA256SUMS).
  - :mod:`.keys`       — ed25519 key files: online keys and the offline root keys (outside the served dir).
  - :mod:`.fsutil`     — atomic writes and the test-only crash hook.
  - :mod:`.repository` — the TUF repository: init, publish, promote, yank, remove, rollout, re-sign, rotate;
    the retention rule that keeps the signed targets within what every host accepts.
  - :mod:`.storage`    — the storage interface (tokens, releases, audit log, fleet) and its backends:
    SQLite in the data dir (default) or PostgreSQL (``serve --database postgresql://…``).
  - :mod:`.app`        — the HTTP service (FastAPI): composes the routers of :mod:`.api` (one module per
    area: public, releases, keys, fleet; guards before routing; one error shape from :mod:`.errors`).
  - :mod:`.staging`    — uploads in progress, shared by every server process on the data directory.
  - :mod:`.metadata_http` — ``GET /metadata/…`` answered from memory before routing.
  - :mod:`.serving`    — our HTTP/1.1 front (metadata answered itself; header/idle/keep-alive timeouts,
    a connection cap) with uvicorn behind it on private Unix sockets; binding with clear errors.
  - :mod:`.tls`        — the operator's certificate, or a self-signed one made on first start.
  - :mod:`.cli`        — ``qx-update-server`` (serve, token create/list/revoke, host forget).
  - :mod:`.release_cli`— ``qx-release``, the release engineer's client.
"""
