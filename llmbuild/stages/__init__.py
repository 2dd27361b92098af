"""One module per stage. Each stage is a function that writes only inside the folder it is given and
returns a JSON-able record; the engine (llmbuild/engine.py) keys, caches and orders them."""
