"""The LM library both sides use: load a base (NF4 / int8 / full), attach a peft adapter, train it, evaluate it.

Silos train their SLM with it (`cotune.edge_client`), and the server trains the LLM and the averaged SLM with it.
"""
