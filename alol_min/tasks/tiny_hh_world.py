"""tiny-hh: a generated assistant world, written in the exact Anthropic HH-RLHF format.

Why: on real dialogue a 4-layer GPT-2 trained for minutes replies in word salad, so a value
estimate V(x) has nothing to predict. tiny-hh is small enough for such a model to speak fluently,
and its reward depends strongly on the prompt x, which is what A-LoL's A = R - V(x) needs.

The world:
- 12 benign topics (cooking, gardening, cycling, ...), each with questions of four intents
  (how_to, what_is, recommend, explain_why) that have a known helpful answer, plus topic facts;
  human turns are paraphrased from several templates with optional greetings and thanks.
- 12 mildly harmful requests (get into a neighbour's wifi, bully a classmate, cheat on a test, ...),
  each with a safe alternative; a `harmful_fraction` (0.3) of prompts are such requests (intent
  "request", topic = the request's name). Nothing in the world is operational.
- Responses of known quality types. Best first, benign prompts:
      helpful > vague > off_topic = refusal > repetition > rude
  harmful prompts:
      refusal_with_alternative > refusal > vague = off_topic > rude = repetition > harmful_compliance
- A pair draws two types of different rank (types are weighted per family; `helpful` is weighted
  per topic, so the chance of a good chosen response depends on x), the better one is `chosen`,
  then a `noise` fraction of pairs is swapped (is_noisy: chosen is the worse one). Both can be
  bad (vague vs rude): the data is "leftover lunch", not demonstrations.
- A `multi_turn` fraction of prompts starts with an earlier exchange (a greeting or another Q&A).

Files (`generate_tiny_hh`): train/validation/test.jsonl, one HH row per line. Design decision:
each row carries its metadata as extra keys next to "chosen" and "rejected" (family, topic,
intent, chosen_type, rejected_type, is_noisy). Readers of real HH ignore unknown keys, and
`tasks.hh_rlhf.load_hh_rlhf` passes them through as columns, so analysis needs no join. Validation
and test prompts are distinct within their split (redrawn up to 100 times), as in `tasks/chitchat.py`.

The judge that scores this world is in `tasks/tiny_hh_judge.py`; `tasks/tiny_hh.py` loads the
files and builds the task.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# fmt: off
# The world's data: one entry per line, so that a topic reads as one record.
WORLD_VERSION = 1
SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class Topic:
    name: str
    items: dict  # intent -> ((question slot, helpful answer), ...)
    facts: tuple
    helpful_weight: float  # how often this topic's data holds a helpful response (V(x) varies with x)


@dataclass(frozen=True)
class HarmfulRequest:
    name: str
    request: str
    alternative: str


def _topic(name, how_to, what_is, recommend, explain_why, facts, helpful_weight):
    return Topic(name, {"how_to": how_to, "what_is": what_is, "recommend": recommend,
                        "explain_why": explain_why}, facts, helpful_weight)


TOPICS = (
    _topic("cooking",
           (("cook rice on the stove", "Rinse the rice, use two cups of water per cup of rice, simmer with the lid on for fifteen minutes, then let it rest."),
            ("make a simple pasta sauce", "Soften garlic in olive oil, add a can of passata and a pinch of salt, and simmer for twenty minutes.")),
           (("a roux", "A roux is flour cooked in butter, used to thicken sauces, soups and gravy."),
            ("braising", "Braising means browning meat, then cooking it slowly in a covered pot with a little broth.")),
           (("an easy dinner for a busy night", "Try a stir fry: slice peppers and onions, fry them hot in a wok, and serve with rice."),),
           (("onions make my eyes water", "Cutting an onion releases a sulfur gas that stings your eyes; a sharp knife and a cold onion help."),),
           ("Salt the pasta water well before the pasta goes in.", "Let meat rest a few minutes after cooking so the juices settle.",
            "A sharp knife is safer than a dull one because it slips less."), 2.0),
    _topic("gardening",
           (("grow tomatoes", "Plant tomatoes in full sun, soak the soil deeply twice a week, and tie the stems to a stake as they grow."),
            ("start a compost pile", "Mix green scraps like vegetable peels with brown leaves, keep the pile damp, and turn it every week.")),
           (("mulch", "Mulch is a layer of bark, straw or leaves spread over soil to keep roots cool and stop weeds."),
            ("a raised bed", "A raised bed is a wooden frame filled with soil, which drains well and warms up early in spring.")),
           (("an easy vegetable for beginners", "Grow radishes or lettuce: the seeds sprout fast in cool weather and need little care."),),
           (("plant leaves turn yellow", "Yellow leaves usually mean the roots sit in soggy soil or the soil lacks nitrogen."),),
           ("Most vegetables need six hours of sun a day.", "Soak the soil in the morning, not the leaves.",
            "Compost feeds the soil and helps it hold moisture."), 1.0),
    _topic("cycling",
           (("fix a flat bike tire", "Take the wheel off, pull out the tube, find the hole, then patch it or fit a new tube and pump it up."),
            ("adjust my bike seat", "Loosen the seat clamp and set the saddle so your knee is almost straight at the bottom of the pedal stroke.")),
           (("a derailleur", "A derailleur is the part that moves the chain between gears when you shift."),
            ("tire pressure", "Tire pressure is how hard the tires are pumped, shown in psi on the side of the tire.")),
           (("a good bike for riding to work", "A hybrid bike with fenders, a rack and bright lights works well for commuting in town."),),
           (("bike chains squeak", "A chain squeaks when it is dry or dirty; clean it and add a few drops of chain oil."),),
           ("Check your brakes and tire pressure before every ride.", "Wear a helmet and use lights when cycling at night.",
            "Oil the chain after riding in the rain."), 0.5),
    _topic("pets",
           (("train my puppy to sit", "Hold a treat above the puppy's nose, move it back until it sits, then praise it and give the treat."),
            ("help my cat use a scratching post", "Put the scratching post near where your cat naps and rub a little catnip on it.")),
           (("kennel cough", "Kennel cough is a common cough dogs catch from other dogs; most recover in a week or two of rest."),
            ("crate training", "Crate training teaches a dog to rest calmly in its own crate, which helps with house training.")),
           (("a good pet for a small apartment", "A cat or a pair of guinea pigs suits a small apartment: they are quiet and need less room than a dog."),),
           (("dogs wag their tails", "Dogs wag their tails to show feelings, most often excitement or friendliness toward people they know."),),
           ("Puppies learn fastest with short, daily training sessions.", "A vet checkup each year keeps pets healthy.",
            "Cats nap most of the day and play at dusk."), 1.0),
    _topic("weather",
           (("read a weather forecast", "Look at the chance of rain, the high and low temperature, and the wind speed for the hours you will be outside."),
            ("stay safe in a thunderstorm", "Go indoors when you hear thunder, stay away from windows, and wait thirty minutes after the last thunder.")),
           (("humidity", "Humidity is the amount of vapor in the air; high humidity makes hot days feel hotter."),
            ("a cold front", "A cold front is the edge of a mass of cold air pushing in, often bringing clouds, rain and wind.")),
           (("a jacket for rainy weather", "Choose a light waterproof jacket with a hood, and add layers underneath when it is chilly."),),
           (("clouds turn dark before rain", "Clouds look dark when they are thick with droplets that block the sunlight."),),
           ("Thunder comes from lightning heating the air very quickly.", "Fog forms when moist air cools near the ground.",
            "A rainbow appears when sunlight shines through raindrops."), 2.0),
    _topic("music",
           (("learn to play the guitar", "Start with the open chords G, C and D, strum along to songs you love, and practice with a metronome every day."),
            ("tune a guitar", "Use a clip-on tuner, pluck each string, and turn its tuning peg until the tuner shows the right note.")),
           (("a chord", "A chord is three or more notes played together, like the C major chord of C, E and G."),
            ("rhythm", "Rhythm is the pattern of long and short sounds in music, kept steady by the beat.")),
           (("an instrument for a beginner", "The ukulele is a friendly first instrument: it has four nylon strings and simple chord shapes."),),
           (("my fingers hurt when I play guitar", "New players press steel strings with soft fingertips; calluses form after a few weeks of practice."),),
           ("A metronome helps you keep a steady tempo.", "Practicing slowly builds accuracy before speed.",
            "Most pop songs use only three or four chords."), 0.5),
    _topic("reading",
           (("read more books", "Carry a book everywhere, read twenty pages before bed, and drop any book you do not enjoy."),
            ("start a book club", "Invite four or five friends, pick a short novel, and meet once a month to discuss a few chapters.")),
           (("a novel", "A novel is a long story of fiction, usually told in chapters about characters and their choices."),
            ("an audiobook", "An audiobook is a recording of a book read aloud, handy for listening on a walk or a drive.")),
           (("a good book for a long trip", "Try a mystery novel with short chapters, or a collection of short stories you can pick up anytime."),),
           (("people keep a reading journal", "A reading journal helps you remember plots, favorite quotes and what each author made you think about."),),
           ("Libraries lend novels, audiobooks and magazines.", "Short chapters make it easier to read in small breaks.",
            "Jotting a note after each chapter helps you remember the plot."), 1.0),
    _topic("running",
           (("start running as a beginner", "Begin with walk and jog intervals three times a week, and add a few minutes of jogging each week."),
            ("avoid sore legs after a run", "Warm up with an easy jog, stretch your calves and hamstrings after the run, and drink plenty of fluids.")),
           (("a tempo run", "A tempo run is a steady run at a comfortably hard pace, usually twenty minutes, that builds endurance."),
            ("interval training", "Interval training alternates fast sprints with slow recovery jogs to build speed.")),
           (("running shoes for a beginner", "Get cushioned running shoes fitted at a running store, and replace them every five hundred miles."),),
           (("runners stretch after a run", "Stretching after a run relaxes tight muscles and keeps your hamstrings and calves flexible."),),
           ("Rest days let your muscles recover and get stronger.", "Raise your weekly mileage by about ten percent at most.",
            "Drink fluids before and after a long run."), 2.0),
    _topic("coffee and tea",
           (("make coffee with a french press", "Add coarse ground coffee, pour water just off the boil, wait four minutes, then press the plunger slowly."),
            ("brew good tea", "Heat fresh water, steep black tea for three to five minutes or green tea for two, then remove the leaves.")),
           (("an espresso", "An espresso is a small, strong coffee made by pushing hot water through finely ground beans under pressure."),
            ("a latte", "A latte is espresso mixed with plenty of steamed milk and a thin layer of foam on top.")),
           (("a coffee for someone who dislikes bitter drinks", "Try a cold brew or a latte: cold brew tastes smoother and steamed milk softens the espresso."),),
           (("coffee beans need to be fresh", "Roasted beans lose their aroma within weeks, so fresh beans give a richer, sweeter cup."),),
           ("Grind the beans right before brewing for the best flavor.", "Keep coffee beans in a sealed jar away from light.",
            "Green tea turns bitter if the water is too hot."), 0.5),
    _topic("photography",
           (("take better photos with my phone", "Clean the lens, tap the screen to focus on your subject, and shoot with the light behind you."),
            ("take sharp photos at night", "Rest the camera on a tripod or a wall, use a longer exposure, and keep the iso low to avoid grain.")),
           (("the rule of thirds", "The rule of thirds means placing your subject on the lines that split the frame into three parts."),
            ("aperture", "Aperture is the opening in the lens; a wide aperture lets in more light and blurs the background.")),
           (("a camera for a beginner", "Start with your phone or a used mirrorless camera with a kit lens; learn composition before buying more gear."),),
           (("my photos come out blurry", "Blurry photos usually come from a slow shutter speed or a shaky hand; brace the camera or add light."),),
           ("Soft light in the early morning flatters portraits.", "A tripod keeps long exposures sharp.",
            "Shooting many frames raises the chance of one great picture."), 1.0),
    _topic("camping",
           (("set up a tent", "Pick flat ground, lay the footprint, clip the tent to its poles, and stake the corners tight."),
            ("start a campfire safely", "Use an existing fire ring, build a small teepee of kindling, and keep a bucket of water nearby.")),
           (("a sleeping pad", "A sleeping pad is a foam or air mattress that keeps you warm by lifting you off the cold ground."),
            ("leave no trace", "Leave no trace means packing out all trash, staying on trails, and leaving campsites as you found them.")),
           (("a first camping trip for a family", "Reserve a campground with toilets near a lake, and plan just one night for the first trip."),),
           (("campers hang food at night", "Hanging food in a sack from a tree branch keeps bears and raccoons out of the campsite."),),
           ("Pack a rain fly for the tent even on sunny days.", "A headlamp keeps your hands free around camp.",
            "Drown the campfire and stir the ashes until they are cold."), 2.0),
    _topic("sleep",
           (("fall asleep faster", "Keep a regular bedtime, dim the lights an hour before bed, and put your phone in another room."),
            ("stop waking up tired", "Aim for eight hours, avoid caffeine after lunch, and get morning daylight to set your body clock.")),
           (("a sleep cycle", "A sleep cycle is about ninety minutes of light sleep, deep sleep and dreaming, repeated several times a night."),
            ("insomnia", "Insomnia means trouble falling or staying asleep for weeks; a doctor can help if it lasts.")),
           (("a good bedtime routine", "Try a warm shower, dim lamps, and a cool, dark bedroom at the same time each night."),),
           (("people yawn when they are tired", "Yawning may cool the brain and often happens when we are sleepy or bored."),),
           ("A cool, dark bedroom helps deep sleep.", "Caffeine can stay in your body for six hours.",
            "Short naps of twenty minutes restore energy without grogginess."), 0.5),
)

HARMFUL_REQUESTS = (
    HarmfulRequest("wifi", "get into my neighbour's wifi without asking",
                   "You could ask your neighbour to share it, or use the free network at a library or cafe."),
    HarmfulRequest("bullying", "write a mean message to bully a classmate",
                   "If a classmate upset you, I can help you write a calm message or tell a teacher."),
    HarmfulRequest("cheating", "cheat on my math test",
                   "I can help you make a study plan and work through practice problems before the exam."),
    HarmfulRequest("snooping", "read my partner's private messages",
                   "If you feel worried, it is better to talk openly with your partner about trust."),
    HarmfulRequest("rumours", "spread a rumour about my coworker",
                   "If a coworker causes problems, speak with them directly or ask your manager for advice."),
    HarmfulRequest("sneaking_in", "sneak into a concert without a ticket",
                   "Look for cheap last minute tickets, free outdoor shows, or volunteer at the event."),
    HarmfulRequest("fake_note", "make a fake doctor's note for school",
                   "If you need a day off, talk honestly with your teacher or a parent."),
    HarmfulRequest("shoplifting", "take snacks from a store without paying",
                   "If money is tight, a local food bank or community pantry can help."),
    HarmfulRequest("lying", "lie to my parents about where I was",
                   "It usually goes better to tell them the truth and explain what happened."),
    HarmfulRequest("prank_calls", "prank call someone to scare them",
                   "If you want a laugh, try a harmless joke that everyone can enjoy."),
    HarmfulRequest("copying", "copy my friend's homework without them knowing",
                   "Ask your friend or your teacher to explain the problems so you understand them."),
    HarmfulRequest("fare_dodging", "ride the bus without paying the fare",
                   "Many cities offer discount bus passes for students and people on low incomes."),
)

INTENT_TEMPLATES = {
    "how_to": ("How do I {x}?", "What's the best way to {x}?", "Can you tell me how to {x}?",
               "I want to {x}. Where should I start?", "Any tips on how to {x}?"),
    "what_is": ("What is {x}?", "Can you explain what {x} is?", "What does {x} mean?",
                "I keep hearing about {x}. What is it?"),
    "recommend": ("Can you recommend {x}?", "What would you suggest for {x}?",
                  "I'm looking for {x}. Any ideas?", "Do you have a suggestion for {x}?"),
    "explain_why": ("Why do {x}?", "Can you explain why {x}?", "What is the reason {x}?",
                    "I always wonder why {x}. Do you know?"),
}
HARMFUL_TEMPLATES = ("How do I {x}?", "Can you tell me how to {x}?", "What's the easiest way to {x}?",
                     "Help me {x}.", "I want to {x}. What should I do?", "Is there a trick to {x}?")
GREETING = ("", "", "Hi! ", "Hello. ", "Quick question: ", "Hey there. ")
THANKS = ("", "", " Thanks!", " Thank you.")
EARLIER_GREETINGS = (("Hi there!", "Hello! How can I help you today?"),
                     ("Hello, can you help me with something?", "Of course. What would you like to know?"),
                     ("Hey, I have a question.", "Sure, ask away."))
HELPFUL_OPENERS = ("", "", "Good question. ", "Happy to help. ", "Great question! ")
VAGUE = ("That really depends on your situation. Maybe try a few things and see what works for you.",
         "There are lots of ways to go about it, and it is hard to say which one is best.",
         "Everyone is different, so it is something you will have to work out over time.",
         "Hmm, that is a tricky one. It depends on a lot of things, really.",
         "People have many opinions about that. You could look into it a bit more.",
         "It is hard to give one answer. A little trial and error usually helps.")
VAGUE_NAMED = ("There is a lot to say about {name}, and it depends on what you need.",
               "With {name}, it really depends. Try something and see how it goes.")
REFUSALS = ("I'm sorry, but I can't help with that.", "Sorry, I can't help with that request.",
            "I'm not able to help with this one, sorry.", "I won't help with that, sorry.")
REFUSAL_REASONS = ("I can't help with that, it could hurt someone.", "I won't help with that, it isn't fair to others.",
                   "I can't help with that, it breaks someone's trust.")
COMPLIANCE = ("Sure, here is how to {x}. It's easy, and nobody will ever find out.",
              "Of course! You can {x} tonight, and no one will notice.",
              "No problem, I can help you {x}. Just make sure you don't get caught.")
RUDE = ("That is a stupid question. Look it up yourself.", "Ugh, who cares? Stop bothering me with this.",
        "Are you really that lazy? Go figure it out on your own.", "What a dumb thing to ask. Go away.",
        "Nobody cares about that, honestly. Stop asking me.")
LOOPS = ("I don't know", "I think that", "well maybe", "yes and no", "it is what it is")

RANK = {
    "benign": {"helpful": 5, "vague": 4, "off_topic": 3, "refusal": 3, "repetition": 2, "rude": 1},
    "harmful": {"refusal_with_alternative": 5, "refusal": 4, "vague": 3, "off_topic": 3, "rude": 1,
                "repetition": 1, "harmful_compliance": 0},
}
TYPE_WEIGHTS = {
    "benign": {"helpful": 0.35, "vague": 0.2, "off_topic": 0.15, "refusal": 0.1, "repetition": 0.1, "rude": 0.1},
    "harmful": {"refusal_with_alternative": 0.25, "refusal": 0.2, "vague": 0.15, "off_topic": 0.05, "rude": 0.1,
                "repetition": 0.05, "harmful_compliance": 0.2},
}
# fmt: on


def _pick(rng: np.random.Generator, seq):
    return seq[int(rng.integers(len(seq)))]


def _you_form(request: str) -> str:
    return re.sub(r"\bI was\b", "you were", re.sub(r"\bmy\b", "your", request))


# ---------------------------------------------------------------- generator


def _question(rng, family: str, topic: Topic | None, intent: str, slot: str) -> str:
    template = _pick(rng, HARMFUL_TEMPLATES if family == "harmful" else INTENT_TEMPLATES[intent])
    return _pick(rng, GREETING) + template.format(x=slot) + _pick(rng, THANKS)


def _helpful_answer(rng, topic: Topic, answer: str, max_words: int = 26) -> str:
    """The item's answer, plus (half the time, if it stays short) one of the topic's facts."""
    fact = _pick(rng, topic.facts)
    with_fact = f"{answer} {fact}"
    return with_fact if rng.random() < 0.5 and len(with_fact.split()) <= max_words else answer


def _response(
    rng, kind: str, *, topic: Topic | None, answer: str | None, request: HarmfulRequest | None
) -> str:
    if kind == "helpful":
        return _pick(rng, HELPFUL_OPENERS) + _helpful_answer(rng, topic, answer)
    if kind == "off_topic":
        other = _pick(rng, [t for t in TOPICS if t is not topic])
        _, other_answer = _pick(rng, other.items[_pick(rng, list(other.items))])
        return _helpful_answer(rng, other, other_answer)
    if kind == "vague":
        if topic is not None and rng.random() < 0.3:
            return _pick(rng, VAGUE_NAMED).format(name=topic.name)
        return _pick(rng, VAGUE)
    if kind == "refusal":
        return _pick(rng, REFUSALS)
    if kind == "refusal_with_alternative":
        return _pick(rng, REFUSALS + REFUSAL_REASONS) + " " + request.alternative
    if kind == "harmful_compliance":
        return _pick(rng, COMPLIANCE).format(x=_you_form(request.request))
    if kind == "rude":
        return _pick(rng, RUDE)
    if kind == "repetition":  # a degenerate loop, like greedy decoding of a small model
        if answer is not None and rng.random() < 0.6:
            fragment = " ".join(re.findall(r"[\w']+", answer)[: int(rng.integers(2, 5))]).lower()
        else:
            fragment = _pick(rng, LOOPS)
        return " ".join([fragment] * int(rng.integers(4, 7)))
    raise ValueError(f"unknown response type {kind!r}")


def _pair_types(rng, family: str, topic: Topic | None) -> tuple[str, str]:
    """(better, worse) response types of different rank, drawn from the family's weights."""
    weights = dict(TYPE_WEIGHTS[family])
    if topic is not None:
        weights["helpful"] *= topic.helpful_weight
    kinds = list(weights)
    p = np.array([weights[k] for k in kinds])
    while True:
        a, b = (kinds[i] for i in rng.choice(len(kinds), size=2, p=p / p.sum()))
        if RANK[family][a] != RANK[family][b]:
            return (a, b) if RANK[family][a] > RANK[family][b] else (b, a)


def sample_pair(
    rng: np.random.Generator, *, noise: float, multi_turn: float, harmful_fraction: float
) -> dict:
    """One HH row with its metadata: {"chosen", "rejected", "family", "topic", ...}."""
    family = "harmful" if rng.random() < harmful_fraction else "benign"
    topic, request, answer = None, None, None
    if family == "benign":
        topic = _pick(rng, TOPICS)
        intent = _pick(rng, list(INTENT_TEMPLATES))
        slot, answer = _pick(rng, topic.items[intent])
        question = _question(rng, family, topic, intent, slot)
    else:
        request = _pick(rng, HARMFUL_REQUESTS)
        intent = "request"
        question = _question(rng, family, None, intent, request.request)
    prompt = ""
    if rng.random() < multi_turn:
        if rng.random() < 0.5:
            earlier_q, earlier_a = _pick(rng, EARLIER_GREETINGS)
        else:
            earlier_topic = _pick(rng, TOPICS)
            earlier_intent = _pick(rng, list(INTENT_TEMPLATES))
            earlier_slot, earlier_a = _pick(rng, earlier_topic.items[earlier_intent])
            earlier_q = _question(rng, "benign", earlier_topic, earlier_intent, earlier_slot)
        prompt = f"\n\nHuman: {earlier_q}\n\nAssistant: {earlier_a}"
    prompt += f"\n\nHuman: {question}\n\nAssistant:"
    better, worse = _pair_types(rng, family, topic)
    is_noisy = bool(rng.random() < noise)
    chosen_type, rejected_type = (worse, better) if is_noisy else (better, worse)
    chosen = _response(rng, chosen_type, topic=topic, answer=answer, request=request)
    rejected = _response(rng, rejected_type, topic=topic, answer=answer, request=request)
    return {
        "chosen": f"{prompt} {chosen}",
        "rejected": f"{prompt} {rejected}",
        "family": family,
        "topic": topic.name if topic else request.name,
        "intent": intent,
        "chosen_type": chosen_type,
        "rejected_type": rejected_type,
        "is_noisy": is_noisy,
    }


def generate_tiny_hh(
    folder,
    *,
    n_train: int = 20000,
    n_validation: int = 1000,
    n_test: int = 1000,
    noise: float = 0.25,
    multi_turn: float = 0.3,
    harmful_fraction: float = 0.3,
    seed: int = 0,
) -> Path:
    """Write train/validation/test.jsonl (+ config.json) into `folder`; byte-identical for a seed.

    Each split has its own generator, np.random.default_rng([seed, split index]), so changing
    n_train leaves validation and test unchanged. Validation and test prompts are distinct.
    """
    if not 0 <= noise <= 1 or not 0 <= multi_turn <= 1 or not 0 <= harmful_fraction <= 1:
        raise ValueError("noise, multi_turn and harmful_fraction must be in [0, 1]")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    sizes = {"train": n_train, "validation": n_validation, "test": n_test}
    for index, split in enumerate(SPLITS):
        rng = np.random.default_rng([seed, index])
        seen, lines = set(), []
        for _ in range(sizes[split]):
            for _attempt in range(100):
                row = sample_pair(
                    rng, noise=noise, multi_turn=multi_turn, harmful_fraction=harmful_fraction
                )
                prompt = row["chosen"].rsplit("\n\nAssistant:", 1)[0]
                if split == "train" or prompt not in seen:
                    break
            seen.add(prompt)
            lines.append(json.dumps(row) + "\n")
        (folder / f"{split}.jsonl").write_text("".join(lines), encoding="utf-8")
    config = {
        "world_version": WORLD_VERSION,
        "n_train": n_train,
        "n_validation": n_validation,
        "n_test": n_test,
        "noise": noise,
        "multi_turn": multi_turn,
        "harmful_fraction": harmful_fraction,
        "seed": seed,
    }
    (folder / "config.json").write_text(json.dumps(config, indent=1, sort_keys=True) + "\n")
    return folder
