from flakehunter.cli import main

main()
