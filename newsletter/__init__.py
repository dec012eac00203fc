"""newsletter: write your newsletter in Markdown; compile it once, preview it, send it exactly once.

The parts, each importing only what lies below it (``tests/test_layout.py`` checks the rules;
docs/architecture.md tells the whole story)::

    cli/            click commands: parse, ask, print (the only package that imports click)
      |
    sending/        the send loop. Public: run (one run of `send`), plan (freeze/resume the
      |             plan), binding (the provider a plan belongs to), outcomes (its vocabulary),
      |             lease, reconcile, suppression_sync, proofs, schedule (what dispatch sends
      |             now). Internal: pool (workers: claim -> call -> record), lookups,
      |             ratelimit (token bucket, the one retry policy)
      |
    providers/      one adapter per email API behind base.Provider; answers.py reads replies,
      |             managed.py their own unsubscribe links, stats.py their per-issue figures
    ledger/         the delivery state machine (base.py draws it), sqlite.py, migrations.py
    compile/        issue.md -> compiled template with slots -> one personalised Message;
      |             lint. Knows nothing of providers, sending, the ledger or the CLI.
    subscribers/    the CSV list: read, validate, edit, import, export
      |
    config, models, errors, unsubscribe, jsontext, text     the leaves everything may use

Beside the CLI, ``unsubscribe_app`` (the WSGI unsubscribe page) and ``unsubscribe_records``
(what an unsubscribe through it records) use the ledger, the list and the providers
(docs/unsubscribe.md); ``report`` and ``reportpage`` (`newsletter report`, its HTML page) read
the ledger and the providers' figures; ``archive`` writes the web archive; ``scaffold`` makes
workspaces and new issues.

Where the protocol happens:

- a batch is claimed (rows ``sending`` under a batch id, committed) in
  ``sending/pool.py`` through ``Ledger.claim`` before its API call;
- the call is the shared template method ``providers/base.py: Provider.send_batch``,
  which no adapter overrides; an answer is mapped to per-recipient outcomes by the
  adapter's ``parse_response`` (with ``providers/answers.py``);
- outcomes are recorded in one transaction by ``Ledger.record``, called from the
  pool's settle path.
"""

__version__ = "0.1.0"
