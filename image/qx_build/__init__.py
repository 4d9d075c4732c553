"""qx-build: drives the Quantix OS image build (``make image``) and its checks.

Call order of a build (``qx-build image``), each step in its own module:

1. :mod:`preflight` — root, tools, a free loop device, disk space, the package mirror; stop early with a
   one-line error and a hint, before anything is written.
2. :mod:`wheels` — the hash-checked wheelhouse of our Python code for the image's Python.
3. :mod:`mkosi` — the disk image (A/B GPT), into ``build/.work/``; :mod:`live` makes the ISO's live
   system from that same tree.
4. :mod:`esp` — slot A's boot entry and loader.conf written into the disk image's ESP.
5. :mod:`artifacts` — update payload (erofs bytes, zstd), UKI, ISO (:mod:`iso`), manifest, SHA256SUMS.
6. :mod:`publish` — finished files are renamed into ``build/`` last, so ``build/`` never holds a
   half-written release.

Invariant: nothing outside ``build/.work`` is touched until step 6, and step 6 only renames.
"""
