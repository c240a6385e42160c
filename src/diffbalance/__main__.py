from diffbalance.cli.main import main

main()
