"""`python -m projector run` - the consumer; `python -m projector replay ...` - rebuild tooling."""

from projector.cli import main

if __name__ == "__main__":
    main()
