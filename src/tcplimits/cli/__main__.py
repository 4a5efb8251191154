from tcplimits.cli import main

raise SystemExit(main())
