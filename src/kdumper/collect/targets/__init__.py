"""Where a capture saves its dump: remote hosts over ssh (``ssh``), and the streaming helpers
they share (``stream``: a checksummed pipe, checksum files).

The modules import only the standard library; import the one you need
(``from kdumper.collect.targets.ssh import SshTarget, stream_dump``).
"""
