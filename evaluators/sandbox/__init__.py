"""The sandbox: one untrusted program on one collection's queries, in a short-lived jailed process.

- ``runner``       ``run_sandboxed``: fork a jail, stream its results back, check them; ``Limits``
- ``jail``         the operating-system layers (namespaces, seccomp, rlimits, chroot, uid, scrubbed state);
                   ``seccomp``: the system-call filter
- ``harness``      what runs inside the jail: compile, ``prepare``, ``score``, stream plain results
- ``wire``         the byte protocol from the jail to its worker; ``state_wire``: ``prepare()`` states as plain
                   data, validated and rebuilt by trusted code
- ``prepared``     the disk cache of validated states shared across candidates; ``prepare_key``: which code a
                   state depends on

Public: ``run_sandboxed``, ``Limits``, ``SandboxResult``. The trust boundary is here: what crosses it is plain
bytes, validated by trusted code. Never imports the engine or anything under ``evorank.evolve``.

May import: evorank.evaluators.errors, evorank.evaluators.index, evorank.evaluators.program, evorank.threadsafe_ast
"""
