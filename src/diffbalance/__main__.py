from diffbalance.cli.app import main

main()
