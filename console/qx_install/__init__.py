"""qx-install: puts Quantix OS on a server's disk, interactively (the ISO's console) or unattended.

Public API (each module owns one concern; everything else is private):

* :mod:`qx_install.answer` — the answer file: :class:`~qx_install.answer.Answer` = the host
  configuration (:class:`qx_console.hostconfig.HostConfig`, the schema the console and the node API share)
  plus ``[install]`` (disk filter, mode, root password hash, keyboard, what to do after). Parsed and
  validated as a whole before anything is written; every error names the key and the fix.
* :mod:`qx_install.sources` — where an unattended install finds its answer file, in order: the kernel
  command line ``qx.answer=URL`` (+ ``qx.answer.sha256=``), a volume labelled ``QXANSWER`` holding
  ``answer.toml``, ``/quantix/answer.toml`` on the installation medium.
* :mod:`qx_install.disks` — the disks of this machine (stable by-id path, model, serial, size,
  transport, partitions, an existing Quantix install, the boot medium) and choosing one by a filter.
* :mod:`qx_install.payload` — the installation payload (``quantix/`` on the ISO): the release's root
  payload, UKI and manifest, systemd-boot, the data partition's factory tree, the image's partition
  definitions; verified against its SHA256SUMS before anything is written.
* :mod:`qx_install.layout` — the partition definitions an install gives systemd-repart, and converting the
  table of a disk installed before dm-verity (the slots' region laid out again, the ESP and the data
  partition kept in place) for a ``keep-data`` install.
* :mod:`qx_install.engine` — plan (what will be written and destroyed) and execute (with progress per
  step) an install: ``wipe``, ``keep-data`` (new slots, the data partition kept) or ``upgrade`` (the
  inactive slot, through qx-update's own slot writer and boot-entry code); a dm-verity release's slot is
  sealed (:mod:`qx_update.seal`) before its boot entry is written.
* :mod:`qx_install.cli` — ``qx-install validate|disks|run|iso``.

Call order: ``answer.load`` (or the console's screens build the same objects) → ``disks.list_disks`` →
``disks.select`` → ``engine.plan`` → ``engine.execute``.
"""
