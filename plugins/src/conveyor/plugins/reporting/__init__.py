"""What the ``lint``, ``test`` and ``scan`` stage kinds share.

Each of them:

1. creates the attempt's reports folder (``ctx.reports_dir``, outside the
   workspace) and exports it to its processes as ``$CONVEYOR_REPORTS_DIR``;
2. runs the stage's ``run:`` commands, if any, in one shell like the ``run``
   kind (``-e``: the script stops at the first failing command);
3. runs built-in tools through the stage's executor, their machine output
   written to files in the reports folder, never to the log;
4. parses the reports, applies the gate and returns a
   :class:`~conveyor.plugin.StageReport` with the outcome.

A tool's nonzero exit code is not by itself a failure when it wrote its
report (linters exit 1 when they find something): the gate decides. A tool
that exits nonzero *without* a report fails the stage.

The modules: :mod:`.frame` (the base class of the kinds and
:class:`~.frame.StageFailure`, which ends an attempt with a reason),
:mod:`.processes` (running commands and tools), :mod:`.files` (the reports
folder and parsing what is in it), :mod:`.outcome` (fingerprints, the report
and the outcome) and :mod:`.log` (summaries and findings in the stage log).
"""
