from pathlib import Path

FIXTURES = Path(__file__).parents[2] / "fixtures"
