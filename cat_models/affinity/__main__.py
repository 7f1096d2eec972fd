"""`python -m cat_models.affinity ...` (see cat_models.affinity.cli)."""

from cat_models.affinity.cli import main

raise SystemExit(main())
