from llamaft_trainer.cli import main

main()
