"""The update server's HTTP API, one router module per area; :func:`qx_update_server.app.create_app`
composes them. Errors everywhere have one shape (:mod:`.errors`); guards run before any route (:mod:`.guards`).
"""
