"""SSH servers (paramiko): the only package that imports paramiko.

``connection`` reaches a server (socket, ciphers, host keys and their trust, logging in,
remote command lines), ``sftp`` is the transport's file primitives on one SFTP channel,
``batches`` the state that keeps many files (and REMOVEs) in flight, and ``pipeline`` the
request pipeline beneath them: the only code that touches paramiko's internals. For
``verify``: ``tree`` lists what the server holds, ``digests`` hashes files, in one
command on the server (``remotehash``) or read back over SFTP (``readback``).

Nothing is imported here: ``transports`` imports ``ssh.sftp`` only for ssh servers, and
``servers trust`` imports ``ssh.connection`` alone.
"""
