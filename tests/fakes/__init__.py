"""Fake chat platform servers on 127.0.0.1, speaking the real protocols, for offline tests."""
