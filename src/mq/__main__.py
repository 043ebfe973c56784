from mq.cli.launch import run

run()
