from alol_min.cli import main

main()
