"""The Textual workbench: a thin shell over the engine (fills, chunks, runs), driven from the keyboard."""
