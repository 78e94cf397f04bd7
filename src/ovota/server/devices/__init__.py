"""The device face: everything that answers a module's requests. ``ota_request`` answers ``ovms3.ver`` and
``ovms3.bin`` top to bottom; beside it the cached channel answers, the ver/bin pins, the open blobs and the
blob responses (Range, conditional GET, sendfile)."""
