"""Data for benchmarks/pipeline_real_models.py: rendered text images and hand-written sentences.

Nothing here is downloaded: text images are drawn with PIL's default font, and the sentences
are written below (varied topics, plain English, 10 per topic).
"""

from __future__ import annotations

import numpy as np

WORDS = (
    "invoice total amount date paid order number customer address street city phone email "
    "report summary chapter page section figure table results method data model test train "
    "open close start stop enter exit push pull north south east west station platform "
    "coffee tea milk sugar bread butter cheese apple orange lemon price sale discount free "
    "monday tuesday friday january march october 2021 2024 15:30 09:00 no.42 A-17 $12.99 "
    "warning danger caution notice private parking only delivery entrance reception office"
).split()


def render_text_images(
    count: int, height: int, width: int, seed: int = 0
) -> tuple[list[np.ndarray], list[int]]:
    """``count`` RGB uint8 images (HxWx3) with random words at random sizes, positions and colours.

    Returns the images and how many words each holds. Heights/widths should be multiples of 32
    (rapidocr keeps such images at their size below 960 px).
    """
    from PIL import Image, ImageDraw, ImageFont

    rng = np.random.default_rng(seed)
    images, word_counts = [], []
    for _ in range(count):
        background = tuple(int(v) for v in rng.integers(170, 256, 3))
        image = Image.new("RGB", (width, height), background)
        draw = ImageDraw.Draw(image)
        placed: list[tuple[int, int, int, int]] = []
        for _ in range(int(rng.integers(3, 9))):
            size = int(rng.integers(max(10, height // 24), max(12, height // 8)))
            font = ImageFont.load_default(size=size)
            text = " ".join(rng.choice(WORDS, size=int(rng.integers(1, 4))))
            left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
            text_w, text_h = right - left, bottom - top
            if text_w >= width - 8 or text_h >= height - 8:
                continue
            for _attempt in range(10):
                x = int(rng.integers(4, width - text_w - 4))
                y = int(rng.integers(4, height - text_h - 4))
                box = (x, y, x + text_w, y + text_h)
                # keep lines apart so each is one detectable box
                if all(
                    box[2] + 6 < p[0] or p[2] + 6 < box[0] or box[3] + 6 < p[1] or p[3] + 6 < box[1]
                    for p in placed
                ):
                    colour = tuple(int(v) for v in rng.integers(0, 90, 3))
                    draw.text((x - left, y - top), text, fill=colour, font=font)
                    placed.append(box)
                    break
        images.append(np.asarray(image)[:, :, ::-1].copy())  # BGR, as rapidocr reads with cv2
        word_counts.append(len(placed))
    return images, word_counts


def cropped_pages(
    count: int, page_hw: tuple[int, int], crop_hw: tuple[int, int], seed: int = 0
) -> list[np.ndarray]:
    """``count`` windows of ``crop_hw``, one at a random place on each page rendered at
    ``page_hw``: cheap training inputs whose text sizes are the full pages' (the renderer
    scales text with the page height, so smaller pages would teach smaller text)."""
    pages, _ = render_text_images(count, *page_hw, seed=seed)
    rng = np.random.default_rng(seed)
    windows = []
    for page in pages:
        top = int(rng.integers(0, page_hw[0] - crop_hw[0] + 1))
        left = int(rng.integers(0, page_hw[1] - crop_hw[1] + 1))
        windows.append(np.ascontiguousarray(page[top : top + crop_hw[0], left : left + crop_hw[1]]))
    return windows


SENTENCES = [
    # cooking
    "Preheat the oven to 200 degrees before you put the bread in.",
    "She added a pinch of salt to the boiling pasta water.",
    "The soup tastes better if you let it simmer for an hour.",
    "Chop the onions finely and fry them until they turn golden.",
    "My grandmother's apple pie recipe uses cinnamon and a little nutmeg.",
    "Fresh basil makes a huge difference in a tomato sauce.",
    "He burned the rice because he forgot to turn down the heat.",
    "Marinate the chicken overnight in yogurt and spices.",
    "Whisk the eggs with sugar until the mixture is pale and fluffy.",
    "The restaurant down the street serves excellent vegetarian curry.",
    # weather
    "Heavy rain is expected across the region tomorrow afternoon.",
    "The temperature dropped below freezing during the night.",
    "A strong wind knocked over several trees in the park.",
    "It has been sunny and warm for the whole week.",
    "Forecasters warn of a possible storm along the coast this weekend.",
    "The morning fog made it hard to see the other side of the lake.",
    "Snow covered the mountains earlier than usual this year.",
    "Humidity makes the summer heat feel even worse.",
    "We cancelled the picnic because of the thunderstorm.",
    "The drought has left many rivers in the south almost dry.",
    # sports
    "The home team won the match with a goal in the final minute.",
    "She has been training for the marathon since January.",
    "The tennis final lasted almost five hours.",
    "Our coach wants us to practise free throws every day.",
    "The cyclist crashed on the descent but finished the stage.",
    "Tickets for the championship game sold out within minutes.",
    "He broke the national record in the 400 metres.",
    "The swimmer won three gold medals at the championships.",
    "Both teams played defensively and the game ended in a draw.",
    "The referee's decision caused an argument among the players.",
    # technology
    "The new phone has a better camera and a longer battery life.",
    "Please restart your computer to finish installing the updates.",
    "The website crashed because too many people tried to log in at once.",
    "Engineers are testing a faster chip for mobile devices.",
    "My laptop keeps overheating when I run several programs.",
    "The company released a security patch for the vulnerability.",
    "Cloud storage lets you access your files from anywhere.",
    "The printer is out of ink again.",
    "You can compress the model so that it runs faster on a small device.",
    "The software engineer fixed the bug in the payment system.",
    # finance
    "The stock market fell sharply after the interest rate announcement.",
    "Inflation has made groceries noticeably more expensive.",
    "She opened a savings account for her daughter.",
    "The bank approved our mortgage application last week.",
    "Investors are worried about the company's falling profits.",
    "He pays off his credit card balance every month.",
    "The central bank decided to keep interest rates unchanged.",
    "Our quarterly revenue grew by twelve percent.",
    "Many people lost money when the housing bubble burst.",
    "The accountant found an error in last year's tax return.",
    # health
    "Regular exercise lowers the risk of heart disease.",
    "The doctor told him to drink more water and rest.",
    "Vaccines have saved millions of lives.",
    "She sprained her ankle while running on the beach.",
    "Getting enough sleep improves concentration and mood.",
    "The hospital opened a new children's ward.",
    "Washing your hands helps prevent the spread of infections.",
    "He takes medicine for his high blood pressure.",
    "The nurse checked the patient's temperature every hour.",
    "Eating more vegetables is good for your health.",
    # travel
    "Our flight was delayed by three hours because of fog.",
    "The train from Paris to Rome takes about eleven hours.",
    "We rented a small car to explore the island.",
    "Don't forget your passport when you go to the airport.",
    "The hotel room had a beautiful view of the harbour.",
    "They spent two weeks backpacking through South America.",
    "The museum is closed on Mondays.",
    "I lost my luggage on the way to Tokyo.",
    "The tour guide showed us the old part of the city.",
    "Traffic into the city is terrible during rush hour.",
    # animals
    "The cat is sleeping on the sofa.",
    "A dog was barking at the postman all morning.",
    "Elephants can remember places they visited years ago.",
    "The birds started singing just before sunrise.",
    "A fox was seen crossing the road near the farm.",
    "Dolphins communicate with clicks and whistles.",
    "Our neighbour keeps chickens in her back garden.",
    "The horse jumped over the fence and ran into the field.",
    "Bees are essential for pollinating many crops.",
    "The zoo welcomed a baby giraffe this spring.",
    # science
    "Water boils at a lower temperature at high altitude.",
    "The telescope captured images of a distant galaxy.",
    "Plants convert sunlight into chemical energy.",
    "The experiment had to be repeated because the samples were contaminated.",
    "Light travels faster than sound.",
    "Researchers discovered a new species of frog in the rainforest.",
    "The moon's gravity causes the tides.",
    "DNA carries the genetic instructions of living organisms.",
    "Volcanoes form where tectonic plates meet.",
    "The chemist measured the acidity of the solution.",
    # education
    "The students have an exam on Friday morning.",
    "She is studying medicine at the university.",
    "The teacher explained fractions using slices of pizza.",
    "Our school library has thousands of books.",
    "He forgot to hand in his homework again.",
    "The professor's lecture on history was fascinating.",
    "Children learn languages more easily than adults.",
    "The university raised its tuition fees this year.",
    "Online courses let people learn at their own pace.",
    "The class went on a field trip to the science museum.",
    # work
    "The meeting has been moved to Thursday at ten.",
    "She was promoted to manager after two years.",
    "I need to finish this report before the deadline.",
    "The company is hiring new software developers.",
    "He works from home three days a week.",
    "The workers went on strike for better pay.",
    "Please send me the presentation slides after the call.",
    "Our office is moving to a bigger building next month.",
    "The interview went well and they offered me the job.",
    "Too many meetings make it hard to get real work done.",
    # home
    "The kitchen sink is leaking again.",
    "We painted the living room a light shade of blue.",
    "The heating stopped working in the middle of winter.",
    "He spent the weekend fixing the garden fence.",
    "Please take out the rubbish before you leave.",
    "Our new sofa was delivered this morning.",
    "The windows need cleaning after the storm.",
    "They are renovating the bathroom upstairs.",
    "I can't find the keys to the front door.",
    "The neighbours are having a noisy party tonight.",
    # music and arts
    "A man is playing a guitar on the street corner.",
    "The orchestra performed Beethoven's ninth symphony.",
    "She has been learning the piano since she was six.",
    "The gallery is showing paintings by young local artists.",
    "The band released their new album on Friday.",
    "The film won the award for best director.",
    "He sings in a choir every Sunday.",
    "The concert was cancelled because the singer was ill.",
    "The novel was translated into more than forty languages.",
    "The actors rehearsed the play for six weeks.",
    # politics and society
    "The government announced new measures to reduce pollution.",
    "Voters will elect a new mayor in November.",
    "The parliament debated the new immigration law.",
    "Protesters gathered in front of the city hall.",
    "The minister resigned after the scandal.",
    "The new law bans smoking in public parks.",
    "Local volunteers cleaned up the beach on Saturday.",
    "The city plans to build more bicycle lanes.",
    "Unemployment fell to its lowest level in a decade.",
    "The charity raised money for families affected by the flood.",
    # transport
    "The bus was late and we missed the beginning of the film.",
    "Electric cars are becoming more affordable.",
    "The bridge is closed for repairs until next week.",
    "A truck broke down on the motorway and caused long delays.",
    "He cycles to work every day, even in the rain.",
    "The subway runs every five minutes during the day.",
    "The airline added new routes to Asia.",
    "Fuel prices have risen again this month.",
    "The ferry crossing was rough because of the waves.",
    "They are building a high-speed railway between the two cities.",
    # shopping
    "The shop is having a sale on winter coats.",
    "I ordered a new pair of shoes online.",
    "The supermarket ran out of bread by noon.",
    "She returned the dress because it was too small.",
    "Prices at the farmers' market are quite reasonable.",
    "The mall is crowded on Saturday afternoons.",
    "He compared prices before buying a new television.",
    "The package should arrive within three working days.",
    "The bookstore on the corner is closing down.",
    "They bought fresh fish at the harbour market.",
    # family and friends
    "My sister is getting married in June.",
    "We visit our grandparents every Christmas.",
    "He called his mother to wish her a happy birthday.",
    "The children were playing in the garden all afternoon.",
    "Our friends invited us for dinner on Saturday.",
    "She moved abroad but we still talk every week.",
    "The baby finally fell asleep after midnight.",
    "My brother taught me how to ride a bike.",
    "They celebrated their anniversary at a small restaurant.",
    "The whole family went camping by the lake.",
    # nature
    "The forest is full of colour in autumn.",
    "A river winds through the valley below the village.",
    "Wildflowers cover the hills in early summer.",
    "The waterfall is most impressive after heavy rain.",
    "The desert gets very cold at night.",
    "Coral reefs are threatened by warming oceans.",
    "The hikers reached the summit just before sunset.",
    "Fallen leaves covered the path through the woods.",
    "The island has white sand beaches and clear water.",
    "The glacier has shrunk a lot over the last century.",
    # history
    "The castle was built in the twelfth century.",
    "The Roman Empire once stretched across most of Europe.",
    "The war ended with the signing of a peace treaty.",
    "Archaeologists found ancient coins near the old temple.",
    "The printing press changed how knowledge spread.",
    "The city was almost destroyed by a great fire.",
    "The first moon landing took place in 1969.",
    "The king was crowned in the cathedral.",
    "The wall divided the city for nearly thirty years.",
    "Historians still argue about the causes of the revolution.",
    # everyday
    "I usually drink a cup of coffee before work.",
    "She forgot her umbrella and got soaked on the way home.",
    "The alarm didn't go off so I overslept.",
    "He reads the newspaper every morning on the train.",
    "We watched a documentary about whales last night.",
    "Could you please turn down the music?",
    "The queue at the post office was very long.",
    "I dropped my phone and cracked the screen.",
    "She walks her dog in the park every evening.",
    "The lights went out during the storm.",
]

# Paraphrase / unrelated triples for a sanity check of the encoder (anchor, paraphrase, unrelated).
PARAPHRASE_CHECKS = [
    (
        "A man is playing a guitar.",
        "Someone is strumming a guitar.",
        "The stock market fell sharply today.",
    ),
    (
        "The cat is sleeping on the sofa.",
        "A kitten naps on the couch.",
        "The bank approved our mortgage application.",
    ),
    (
        "Our flight was delayed by three hours.",
        "The plane took off three hours late.",
        "She added a pinch of salt to the pasta.",
    ),
    (
        "Regular exercise lowers the risk of heart disease.",
        "Working out often reduces your chance of heart problems.",
        "The castle was built in the twelfth century.",
    ),
]


def render_word_crops(count: int, seed: int = 0, width: int = 320) -> tuple[np.ndarray, list[str]]:
    """``count`` text-line crops of 1-3 WORDS as a detector cuts them (the line fills the height),
    preprocessed as rapidocr's recognizer does (BGR, height 48, the width kept at the aspect ratio
    and padded with 0 to ``width``, (x/255 - 0.5)/0.5): [count, 3, 48, width] and the labels."""
    from PIL import Image, ImageDraw, ImageFont

    rng = np.random.default_rng(seed)
    batch, labels = [], []
    while len(batch) < count:
        font = ImageFont.load_default(size=int(rng.integers(28, 38)))
        text = " ".join(rng.choice(WORDS, size=int(rng.integers(1, 4))))
        scratch = ImageDraw.Draw(Image.new("RGB", (1, 1)))
        left, top, right, bottom = scratch.textbbox((0, 0), text, font=font)
        pad_x, pad_y = int(rng.integers(2, 10)), int(rng.integers(3, 8))
        size = (right - left + 2 * pad_x, bottom - top + 2 * pad_y)
        image = Image.new("RGB", size, tuple(int(v) for v in rng.integers(170, 256, 3)))
        colour = tuple(int(v) for v in rng.integers(0, 90, 3))
        ImageDraw.Draw(image).text((pad_x - left, pad_y - top), text, fill=colour, font=font)
        resized_w = int(np.ceil(48 * size[0] / size[1]))
        if resized_w > width:  # rapidocr would widen the batch; keep one width instead
            continue
        pixels = np.asarray(image.resize((resized_w, 48), Image.BILINEAR), np.float32)[:, :, ::-1]
        crop = np.zeros((3, 48, width), np.float32)
        crop[:, :, :resized_w] = ((pixels / 255.0 - 0.5) / 0.5).transpose(2, 0, 1)
        batch.append(crop)
        labels.append(text)
    return np.stack(batch), labels


# Template sentences for distillation data (unlabelled text is free): deterministic, varied in
# topic, length and form, and disjoint from ``SENTENCES`` (which stays the held-out pool).
_SUBJECTS = tuple(
    (
        "my neighbour|the old teacher|a young nurse|our manager|the small boy|her brother|the "
        "pilot|a tired driver|the farmer|his daughter|the committee|a famous singer|the new "
        "doctor|the shop owner|my best friend|the engineers"
    ).split("|")
)
_VERBS = tuple(
    (
        "bought|repaired|painted|forgot|found|sold|described|cleaned|borrowed|carried|lost|ordere"
        "d|visited|photographed|opened|measured"
    ).split("|")
)
_OBJECTS = tuple(
    (
        "a blue bicycle|the kitchen window|an expensive watch|the broken fence|a box of old "
        "letters|the village church|a bag of apples|the train tickets|a wooden chair|the museum "
        "map|a bottle of olive oil|the garden shed|a new laptop|the river bridge|a pair of "
        "boots|the annual report"
    ).split("|")
)
_PLACES = tuple(
    (
        "near the harbour|after lunch|in the morning|before the meeting|at the station|during the"
        " holidays|on a rainy day|behind the library|last weekend|in the city centre|at "
        "midnight|next to the bakery"
    ).split("|")
)
_REASONS = tuple(
    (
        "because it was cheap|although nobody asked|so that everyone could see it|while the "
        "children were asleep|because the weather was bad|to surprise the family|before the "
        "prices went up|since the old one was gone"
    ).split("|")
)
_QUESTIONS = tuple(
    (
        "Did {s} really say that {o} was missing?|Why has {s} {v} {o} again?|Where did {s} put "
        "{o} {p}?|How often does {s} check {o}?"
    ).split("|")
)
_FACTS = tuple(
    (
        "The population of the town grew by {n} percent in {y}.|The train to the coast leaves "
        "every {n} minutes on weekdays.|About {n} people attended the concert in {y}.|The bridge "
        "is {n} metres long and was finished in {y}.|Our team scored {n} points in the final game"
        " of {y}.|The recipe needs {n} grams of flour and two eggs."
    ).split("|")
)


def generated_sentences(count: int, seed: int = 0) -> list[str]:
    """``count`` deterministic sentences from templates (statements, questions, facts, lists)."""
    rng = np.random.default_rng(seed)

    def pick(options: tuple[str, ...]) -> str:
        return str(options[int(rng.integers(len(options)))])

    out: list[str] = []
    while len(out) < count:
        s, v, o, p = pick(_SUBJECTS), pick(_VERBS), pick(_OBJECTS), pick(_PLACES)
        kind = int(rng.integers(6))
        if kind == 0:
            text = f"{s} {v} {o} {p}."
        elif kind == 1:
            text = f"{s} {v} {o} {p} {pick(_REASONS)}."
        elif kind == 2:
            text = pick(_QUESTIONS).format(s=s, v=v, o=o, p=p)
        elif kind == 3:
            text = pick(_FACTS).format(n=int(rng.integers(2, 400)), y=int(rng.integers(1950, 2025)))
        elif kind == 4:
            text = f"{p.capitalize()}, {s} {v} {o}, and {pick(_SUBJECTS)} {pick(_VERBS)} {pick(_OBJECTS)}."
        else:
            text = f"Nobody expected that {s} would have {v} {o} {pick(_REASONS)}."
        out.append(text[0].upper() + text[1:])
    return out


def augment_sentences(texts: list[str], seed: int) -> list[str]:
    """The sentences, three word spans of each and as many random pairs joined together."""
    rng = np.random.default_rng(seed)
    out = list(texts)
    for text in texts:
        words = text.split()
        for _ in range(3):
            length = int(rng.integers(min(4, len(words)), len(words) + 1))
            start = int(rng.integers(0, len(words) - length + 1))
            out.append(" ".join(words[start : start + length]))
    for _ in range(len(texts)):
        first, second = rng.choice(len(texts), 2, replace=False)
        out.append(texts[first] + " " + texts[second])
    return out
