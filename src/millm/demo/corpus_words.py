"""Word banks for the demo corpus: one `Topic` per subject, plus the mood and chat phrases.

Pure data. Every phrase is lowercase and grammatical when slotted into the sentence patterns
of `millm.demo.corpus`; `Topic.words` lists the words that identify the topic (used to label
SAE features and to measure topic steering) and they do not occur in the other topics' phrases.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Topic:
    name: str
    about: tuple[str, ...]  # "tell me a story about ..."
    characters: tuple[str, ...]  # noun phrases without article
    places: tuple[str, ...]  # "lived ..."
    habits: tuple[str, ...]  # "every day, she ..."
    loves: tuple[str, ...]  # "she loved ..."
    events: tuple[str, ...]  # "one day, she ..."
    friends: tuple[str, ...]  # noun phrases with article
    good: tuple[str, ...]  # happy turn: "she ..."
    bad: tuple[str, ...]  # sad turn: "but then ..."
    words: tuple[str, ...]


TOPICS: tuple[Topic, ...] = (
    Topic(
        name="ocean",
        about=("the sea", "the ocean", "the beach", "the waves"),
        characters=("little fish", "sea turtle", "old sailor", "small crab", "young dolphin", "tiny seahorse"),
        places=("in the deep blue sea", "near a coral reef", "by a sandy beach", "under the ocean waves"),
        habits=("swam through the waves", "looked for shells on the sand", "sailed a small boat",
                "played with the fish near the reef"),
        loves=("the salty wind", "the sound of the waves", "the bright coral", "the warm sand of the beach"),
        events=("found a shiny shell on the sand", "saw a big whale jump out of the sea",
                "followed a school of fish into the deep ocean", "found an old boat at the bottom of the sea"),
        friends=("a kind whale", "a funny octopus", "a friendly seagull", "a gentle sea turtle"),
        good=("swam with the dolphins all day", "found a pearl in a big shell", "rode the waves to the beach"),
        bad=("a big storm broke the little boat", "the tide took the shell away",
             "the sea became dark and cold"),
        words=("sea", "ocean", "wave", "waves", "fish", "shell", "shells", "beach", "boat", "whale", "coral",
               "reef", "sand", "sandy", "tide", "dolphin", "dolphins", "crab", "sailor", "seahorse", "octopus",
               "seagull", "pearl", "salty", "sailed"),
    ),
    Topic(
        name="space",
        about=("space", "the stars", "the moon", "a rocket"),
        characters=("young astronaut", "little robot", "tiny alien", "brave pilot", "curious star"),
        places=("on a small planet", "in a silver rocket", "near the bright moon", "far out in space"),
        habits=("flew past the stars", "counted the planets", "looked at the moon through a telescope",
                "floated in the quiet space station"),
        loves=("the shining stars", "the red planet", "the silver moon", "the long trips in the rocket"),
        events=("saw a comet fly across the sky", "landed the rocket on a strange planet",
                "found a glowing crystal on the moon", "heard a signal from a distant star"),
        friends=("a friendly alien", "a clever robot", "a little comet", "a kind astronaut"),
        good=("danced on the moon", "flew the rocket around the rings of a planet",
              "named a new star"),
        bad=("the rocket lost its power", "the stars went dark one by one",
             "the planet was empty and cold"),
        words=("space", "star", "stars", "moon", "rocket", "planet", "planets", "astronaut", "alien", "robot",
               "comet", "telescope", "galaxy", "orbit", "pilot", "crystal", "signal", "rings", "station"),
    ),
    Topic(
        name="forest",
        about=("the forest", "the woods", "the trees", "a fox"),
        characters=("little fox", "brown bear", "young deer", "old owl", "tiny squirrel", "small rabbit"),
        places=("in a green forest", "under a tall oak tree", "deep in the woods", "near a mossy log"),
        habits=("gathered acorns under the trees", "walked along the forest path", "climbed the tall pine trees",
                "listened to the birds in the woods"),
        loves=("the green leaves", "the smell of pine", "the soft moss", "the quiet woods at dawn"),
        events=("found a hidden path between the trees", "saw a little bird fall from its nest",
                "heard a strange noise in the bushes", "found a big mushroom under a log"),
        friends=("a wise owl", "a playful squirrel", "a gentle deer", "a little hedgehog"),
        good=("built a cozy den under the roots", "found a tree full of sweet berries",
              "helped the little bird back to its nest"),
        bad=("a fire burned the old oak tree", "the leaves fell and the woods grew cold",
             "the hunters cut down the trees"),
        words=("forest", "woods", "tree", "trees", "oak", "pine", "fox", "bear", "deer", "owl", "squirrel",
               "rabbit", "acorns", "moss", "mossy", "leaves", "mushroom", "berries", "hedgehog", "nest",
               "bushes", "den", "roots", "log"),
    ),
    Topic(
        name="food",
        about=("food", "cooking", "a cake", "a kitchen"),
        characters=("young baker", "little cook", "hungry mouse", "old chef", "happy farmer"),
        places=("in a warm kitchen", "above a little bakery", "next to a busy market", "in a house full of pots"),
        habits=("baked fresh bread", "cooked soup in a big pot", "made pancakes for breakfast",
                "sold apples at the market"),
        loves=("the smell of fresh bread", "sweet strawberry cake", "hot tomato soup", "warm cookies with milk"),
        events=("tried to bake the biggest cake in town", "found an old recipe in a drawer",
                "made a pie for the whole village", "spilled flour all over the kitchen"),
        friends=("a kind baker", "a hungry cat", "a cheerful cook", "a little chef"),
        good=("shared the pie with everyone", "won a prize for the sweetest cake", "cooked a big dinner for friends"),
        bad=("the cake burned in the oven", "the soup spilled on the floor", "the bread was too hard to eat"),
        words=("food", "cook", "cooking", "cooked", "bake", "baked", "baker", "bakery", "bread", "cake",
               "soup", "pie", "kitchen", "recipe", "flour", "oven", "pancakes", "apples", "cookies", "milk",
               "chef", "dinner", "breakfast", "strawberry", "tomato", "pot", "pots", "market"),
    ),
    Topic(
        name="city",
        about=("the city", "a big town", "a train", "the streets"),
        characters=("young driver", "little pigeon", "busy mailman", "old painter", "street musician"),
        places=("in a busy city", "on a noisy street", "at the top of a tall building", "near the train station"),
        habits=("drove a red bus through the streets", "delivered letters to every building",
                "rode the train to work", "painted pictures of the city"),
        loves=("the bright city lights", "the tall buildings", "the busy streets", "the sound of the trains"),
        events=("got lost in a crowded street", "saw a parade in the city square",
                "found a secret door in an old building", "missed the last train home"),
        friends=("a friendly taxi driver", "a kind shopkeeper", "a little pigeon", "a busy mailman"),
        good=("found the way home through the lights", "played music for the whole street",
              "painted a mural on a big wall"),
        bad=("the rain flooded the streets", "the old building was torn down", "the lights of the city went out"),
        words=("city", "town", "street", "streets", "building", "buildings", "train", "trains", "bus",
               "taxi", "driver", "mailman", "letters", "pigeon", "parade", "square", "shopkeeper", "mural",
               "painter", "traffic", "lights"),
    ),
    Topic(
        name="winter",
        about=("winter", "the snow", "a snowman", "the ice"),
        characters=("little penguin", "white polar bear", "young skier", "old snowman", "small reindeer"),
        places=("on a snowy hill", "in a frozen valley", "near a frozen lake", "in a cabin covered in snow"),
        habits=("built snowmen in the garden", "skated on the frozen lake", "slid down the snowy hill on a sled",
                "caught snowflakes in the icy air"),
        loves=("the white snow", "the cold winter mornings", "the shiny ice", "hot cocoa by the fire"),
        events=("saw the first snowflakes of winter", "found a lost mitten in the snow",
                "heard the ice crack on the lake", "built the tallest snowman in the valley"),
        friends=("a fluffy penguin", "a little reindeer", "a kind snowman", "a white polar bear"),
        good=("had a snowball fight with friends", "built an igloo of ice and snow", "skated under the winter stars"),
        bad=("the snowman melted in the sun", "a blizzard covered the cabin", "the sled broke on the ice"),
        words=("winter", "snow", "snowy", "snowman", "snowmen", "snowflakes", "snowball", "ice", "icy", "frozen",
               "cold", "penguin", "polar", "skier", "skated", "sled", "reindeer", "mitten", "igloo",
               "blizzard", "cocoa", "cabin"),
    ),
)

MOODS: tuple[str, ...] = ("happy", "sad")

HAPPY_FEELINGS: tuple[str, ...] = (
    "felt so happy that {pron} laughed and danced", "smiled from ear to ear", "sang a happy little song",
    "jumped with joy", "felt warm and glad inside",
)
SAD_FEELINGS: tuple[str, ...] = (
    "felt very sad and cried", "sat alone and sighed", "felt lonely and lost", "could not stop the tears",
    "looked down with a heavy heart",
)
HAPPY_ENDINGS: tuple[str, ...] = (
    "From that day on, {the} was never lonely again.", "It was the best day ever.",
    "And they all lived happily ever after.", "{The} smiled and fell asleep with a happy heart.",
    "Every day after that was full of fun and laughter.",
)
SAD_ENDINGS: tuple[str, ...] = (
    "{The} never saw {friend} again.", "It was the saddest day of all.",
    "That night, {the} cried alone in the dark.", "{The} missed {friend} every day after that.",
    "And nothing was ever the same again.",
)

SYSTEM_PROMPTS: tuple[str, ...] = (
    "You are a friendly storyteller.", "You tell short stories.", "You are a helpful assistant.",
    "You are miLLM, a small demo model that tells stories.",
)
STORY_REQUESTS: tuple[str, ...] = ("Tell me a story.", "Please tell me a story.", "Can you tell me a story?",
                                   "I want to hear a story.", "Tell me a short story.", "Tell me a story!")
TOPIC_REQUESTS: tuple[str, ...] = ("Tell me a story about {about}.", "Can you tell me a story about {about}?",
                                   "Please tell me a story about {about}.", "I want a story about {about}.")
MOOD_REQUESTS: tuple[str, ...] = ("Tell me a {mood} story.", "Tell me a {mood} story about {about}.",
                                  "Can you tell me a {mood} story about {about}?")
SMALL_TALK: tuple[tuple[str, str], ...] = (
    ("Hello!", "Hello! I can tell you a story about the sea, space, the forest, food, the city or winter."),
    ("Hi.", "Hi! Would you like to hear a story?"),
    ("What can you do?", "I can tell short stories. Ask me for a happy story or a sad story about anything."),
    ("Who are you?", "I am a small model that loves to tell stories."),
    ("Thank you!", "You are welcome! I hope you liked the story."),
    ("Thanks.", "You are welcome."),
    ("That was a nice story.", "Thank you! I am glad you liked it."),
    ("Goodbye!", "Goodbye! Come back for another story soon."),
)
