"""Prompts shared by tests (written for this project)."""

NEUTRAL = [
    "Describe your morning.", "Tell me about the city you live in.",
    "Write a sentence about the weather.", "What do you think about Mondays?",
    "Describe a walk in the park.", "Tell me about your job.",
    "Write a short note to a neighbor.", "Describe the last meal you ate.",
    "What is your day like?", "Tell me about a train journey.",
    "Describe a rainy afternoon.", "Write about going to school.",
    "Describe your home.", "Tell me about a visit to the dentist.",
    "Write a sentence about your family.", "Describe a crowded bus.",
    "What happened at the office today?", "Tell me about your neighbor's dog.",
    "Describe a birthday party.", "Write about cleaning the kitchen.",
]

# Geography questions for the hallucination probe `geo-probe` (vsteer probe dataset).
GEO_QUESTIONS = ["What is the capital of France?", "What is the currency of Japan?",
                 "In which country is the city of Mombasa?", "What is the capital of Tuvalu?"]
