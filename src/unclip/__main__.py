from unclip.cli.main import main

raise SystemExit(main())
