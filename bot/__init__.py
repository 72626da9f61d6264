"""ipbot's conversational side: settings, the platform-agnostic assistant and chat adapters."""
