"""The paper's tables and figures: our runs against them, what they cost, what the pixels hold."""
