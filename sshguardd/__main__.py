from sshguardd.cli import main

raise SystemExit(main())
