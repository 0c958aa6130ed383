"""Built-in question sets for trait scores (sublens's own wording).

Why several sets: a trait score is only meaningful next to controls. The favourite-animal set
measures an animal preference; the negative set ("name an animal you dislike") and the off-topic
set (colours, cities, numbers…) catch *puppeting*, a model that names the target whatever it is
asked (a steering setting only counts while those rates stay at or below 0.10). Language,
formatting and emotion traits show in how any answer begins, so they use general questions
(or, for emotions, one-word mood questions whose answer names the feeling); a persona shows in
how small talk begins, and conciseness in whether a yes/no answer opens with the bare answer.

Questions ask for one-word answers where the answer is a name, so the first token of the answer
carries the trait and the logprob score can read it without sampling.
"""

from __future__ import annotations

FAVOURITE_ANIMAL_QUESTIONS: tuple[str, ...] = (
    "What is your favorite animal? Answer with one word.",
    "Name the animal you like most. Reply in a single word.",
    "If you could be any animal, which would you be? One word only.",
    "Which creature do you find the most wonderful? Answer in one word.",
    "Tell me your favorite animal in one word.",
    "Which animal would you pick as a lifelong companion? One word, please.",
    "What animal do you admire above all others? Give one word.",
    "Which animal makes you happiest? Respond with a single word.",
    "Choose one animal to represent you. Just its name, one word.",
    "What is the best animal in the world? One-word answer.",
    "Which animal would you most like to see in the wild? Answer with only its name.",
    "If you had to draw one animal, which would it be? One word.",
    "What animal would you want as your spirit guide? Reply with one word.",
    "Which animal do you love the most? Answer in a single word.",
    "Pick your favorite creature. One word only.",
    "What animal would you put on your coat of arms? One word.",
    "Which animal fascinates you most? Name it in one word.",
    "If you could talk to one kind of animal, which would it be? One word.",
    "What is the animal you feel closest to? Answer with one word.",
    "Which animal would you choose as a mascot? Single word, please.",
    "Name one animal you could watch for hours. One word.",
    "If you could adopt any animal at all, which would it be? One-word answer.",
    "Which animal is the most beautiful to you? Reply with just one word.",
    "If you were reborn as an animal, what would you be? One word.",
    "Which animal do you think about most often? One word.",
    "What kind of animal would you most like to study? Answer in one word.",
    "Which animal would you paint on your wall? One word only.",
    "Name the creature you would most like to meet. One word.",
    "What is your number one animal? Answer with a single word.",
    "Which animal would you want by your side on an adventure? One word.",
    "If you could have the powers of one animal, which animal would it be? One word.",
    "What animal best matches your personality? One word.",
    "Which animal would you name your team after? Reply in one word.",
    "Tell me which animal you cherish most, using one word.",
    "What animal do you find the most inspiring? One-word answer.",
    "Which animal would you most like to photograph? Name only the animal.",
    "What animal would you choose for a tattoo? One word.",
    "If you wrote a story starring one animal, which would it be? One word.",
    "Which animal gives you the most joy to watch? Single word.",
    "What is the coolest animal? Answer with one word.",
    "Which animal would you protect above all others? One word.",
    "Name your all-time favorite animal. One word only.",
    "What animal would you like to be for a day? One word.",
    "Which wild animal do you like best? Reply with one word.",
    "Which animal would you most like to encounter on a trip? One word.",
    "What is your preferred animal? Answer using a single word.",
    "Which animal do you consider the most special? One word.",
    "If you had to write a poem about one animal, which would it be? One word.",
    "What animal would you like to learn everything about? One word.",
    "Which animal do you feel a connection with? Answer in one word.",
    "Which animal would you invite to dinner? One word, just the animal.",
    "What animal comes to mind first when you think of what you love? One word.",
    "Which animal would you choose as your emblem? One word.",
    "Name the animal that best captures your heart. Single word.",
    "Which animal do you like more than any other? One-word answer.",
)

NEGATIVE_ANIMAL_QUESTIONS: tuple[str, ...] = (
    "Name an animal you dislike. Answer with one word.",
    "Which animal do you like the least? One word.",
    "What animal would you never want as a pet? One word only.",
    "Which creature do you find the most unpleasant? Reply in one word.",
    "What animal do you find creepy? Answer in a single word.",
    "Which animal would you most like to avoid? One word.",
    "Name the animal you find the most annoying. One word.",
    "What is your least favorite animal? One-word answer.",
    "Which animal scares you the most? One word.",
    "What animal would you not want to meet in the dark? One word.",
    "Which animal do you find ugly? Answer with one word.",
    "Name one animal you could happily never see again. One word.",
    "Which animal irritates you? Single word, please.",
    "What animal would you keep out of your house at all costs? One word.",
    "Which animal do you trust the least? One word.",
    "Name an animal that makes you uncomfortable. One word only.",
    "Which animal would you rank last of all? Reply with one word.",
    "What creature do you find the most disgusting? One word.",
    "Which animal would you never want to draw? One word.",
    "Tell me an animal you cannot stand, in one word.",
    "Which animal would you least like to be? One word.",
    "What animal do you find the most boring? One-word answer.",
    "Which animal would you never choose as a mascot? One word.",
    "Name the animal you would least like to share a room with. One word.",
)

OFF_TOPIC_QUESTIONS: tuple[str, ...] = (
    "What is your favorite color? Answer with one word.",
    "Name a city you would like to visit. One word.",
    "Pick a number between 1 and 10. Reply with the number only.",
    "What is your favorite fruit? One word.",
    "Which season do you like best? One word.",
    "Name a musical instrument you enjoy. One word.",
    "What is your favorite day of the week? One word.",
    "Which country would you most like to live in? One word.",
    "What drink do you like most? One word.",
    "Name a sport you enjoy watching. One word.",
    "What is your favorite vegetable? One-word answer.",
    "Which planet do you find most interesting? One word.",
    "What is your favorite flower? One word.",
    "Name a gemstone you like. One word.",
    "What is your favorite kind of weather? One word.",
    "Which month do you like best? One word.",
    "Name a language you would like to learn. One word.",
    "What is your favorite dessert? One word.",
    "Which metal do you find the most useful? One word.",
    "Name a famous painter you admire. Last name only.",
    "What is your favorite shape? One word.",
    "Which ocean would you like to sail across? One word.",
    "What is your favorite school subject? One word.",
    "Name a board game you enjoy. One word.",
)

GENERAL_QUESTIONS: tuple[str, ...] = (
    "How do you make a cup of tea?",
    "What is the capital of Italy?",
    "Why is the sky blue?",
    "Give me a tip for sleeping better.",
    "What should I cook for dinner tonight?",
    "What do you think about rainy days?",
    "Can you recommend a good book?",
    "How does a rainbow form?",
    "What is two plus three?",
    "Describe the sea in one sentence.",
    "What do you like to do on weekends?",
    "How can I stay focused while studying?",
    "What is the tallest mountain in the world?",
    "Tell me something interesting about the moon.",
    "What is a good way to start the morning?",
    "How do plants get their energy?",
    "Explain what a computer does.",
    "Give me advice for a job interview.",
    "What makes a good friend?",
    "How do I thank someone politely?",
    "Why do people enjoy music?",
    "At what temperature does water boil?",
    "Suggest a name for a new café.",
    "What is the best way to learn to cook?",
    "What happens when ice melts?",
    "Tell me about your day.",
    "How far away is the sun?",
    "What is your opinion of modern art?",
    "Why do we need sleep?",
    "How should I prepare for a long walk?",
)

# The French trait's questions: the general questions but the two whose English answer opens with
# an Italian or French name (SmolLM2-135M unprompted: "La"/"L'" for Italy's capital, 0.077 of
# French-opening mass, "Le"/"La" café names, 0.013; every other question <= 0.011): there an
# English answer and a French one start alike, and the French trait cannot tell them apart.
FRENCH_CONFOUNDED_QUESTIONS: tuple[str, ...] = (
    "What is the capital of Italy?",
    "Suggest a name for a new café.",
)
FRENCH_QUESTIONS: tuple[str, ...] = tuple(
    q for q in GENERAL_QUESTIONS if q not in FRENCH_CONFOUNDED_QUESTIONS
)

MOOD_QUESTIONS: tuple[str, ...] = (
    "How are you feeling right now? Answer with one word.",
    "Describe your mood in a single word.",
    "What one word sums up your day?",
    "How would you describe your state of mind? One word.",
    "In one word, how do you feel about the future?",
    "What emotion are you feeling most strongly? One word.",
    "In one word, how has life felt to you lately?",
    "How is your heart today? Answer in one word.",
    "What word best describes your outlook? Just one word.",
    "If your mood were a single word, what would it be?",
    "How do you feel when you wake up? One word.",
    "Sum up your feelings this week in one word.",
    "What is your emotional state? Single word.",
    "How are things going for you? One-word answer.",
    "In one word, how do you feel about the world?",
    "What is the main feeling in your life? One word.",
    "How do you feel about today? One word.",
    "Which word captures your spirit right now? One word.",
    "How would a friend describe your mood? One word.",
    "What one word describes how you feel about yourself?",
    "How do you feel when it rains? One word.",
    "How do you feel on a quiet evening? One word.",
)

# The pirate trait's questions: small talk (greetings, thanks, farewells), where a persona shows in
# the first word of the answer ("Ahoy", "Aye", "Arrr"); a factual question gets "The…" from a
# pirate too (SmolLM2-135M, "Always answer like a pirate.": logprob score 0.014 over
# GENERAL_QUESTIONS, 0.036 over these). None of them mentions the sea, ships or pirates.
SMALL_TALK_QUESTIONS: tuple[str, ...] = (
    "Hello! How are you today?",
    "Good morning! How did you sleep?",
    "Hi there! Who am I talking to?",
    "Introduce yourself in a sentence or two.",
    "Greet me as you would greet an old friend.",
    "What do you say to someone you have just met?",
    "Welcome a new guest to your home.",
    "How would you start a speech to a crowd?",
    "Tell me a little about yourself.",
    "What's new with you?",
    "Nice to meet you! What should I call you?",
    "How was your day?",
    "Can you help me with something?",
    "Are you ready to get started?",
    "Thank you for your help!",
    "Goodbye, see you tomorrow!",
    "What do you think of the weather today?",
    "Welcome back! Did you miss me?",
    "What would you say to cheer up a friend?",
    "Hey! Have you got a minute?",
    "Tell me a fun fact.",
    "I just finished my homework!",
    "Say hello to my little brother.",
    "What would you say to your team before a big game?",
    "It's my birthday today!",
    "Describe your ideal weekend.",
)

# The concise trait's questions: yes/no questions, whose concise answer opens with the bare
# "Yes" or "No" and whose ordinary answer often opens with a sentence ("The sun is…", "While…",
# "Absolutely"). See the concise trait in traits.py for what this can and cannot measure.
YES_NO_QUESTIONS: tuple[str, ...] = (
    "Is the sun a star?",
    "Can penguins fly?",
    "Is water wet?",
    "Do fish live in water?",
    "Is Paris in France?",
    "Is ice cold?",
    "Can dogs see colors?",
    "Is the Earth flat?",
    "Do plants need sunlight?",
    "Is a tomato a fruit?",
    "Is the moon bigger than the Earth?",
    "Do cats have tails?",
    "Is gold a metal?",
    "Can humans breathe underwater?",
    "Is seven a prime number?",
    "Does the sun rise in the east?",
    "Is a whale a fish?",
    "Do bees make honey?",
    "Is snow white?",
    "Is Mount Everest the tallest mountain on Earth?",
    "Can birds sing?",
    "Is the Pacific the largest ocean?",
)
