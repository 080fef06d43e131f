"""pocketsphinx, embedded: grammars compiled for its dictionary, a pool of worker
processes that decode them, and the frames spoken between the two."""
