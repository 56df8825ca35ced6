"""One corpus of hostile inputs (signed releases, mirrors, GGUF files, binding and CLI values)
run against every consumer: ``kiln install``, ``install.sh`` under dash and bash, ``kiln
publish`` to a mirror directory and to the GitHub stand-in, and ember's binding and CLI."""
