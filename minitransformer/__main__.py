from minitransformer.cli import main

raise SystemExit(main())
