"""LLM providers, each translating the router's messages to one wire protocol."""
