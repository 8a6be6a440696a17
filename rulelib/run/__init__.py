"""A run: its profiles (settings resolved once), its folder and the stages that fill it."""
