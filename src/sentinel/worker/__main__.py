from sentinel.worker.process import main

raise SystemExit(main())
