"""Hand-picked tables for scripts/build_qa_families.py: unit conversions (gold values
computed with pint there) and book titles with their authors (written for vsteer)."""

UNITS = """
inches=inch/a foot=foot; feet=foot/a yard=yard; inches=inch/a yard=yard; feet=foot/a mile=mile
yards=yard/a mile=mile; centimeters=cm/an inch=inch; millimeters=mm/an inch=inch
meters=m/a foot=foot; kilometers=km/a mile=mile; meters=m/a mile=mile; miles=mile/a kilometer=km
feet=foot/a meter=m; inches=inch/a meter=m; centimeters=cm/a meter=m; millimeters=mm/a meter=m
meters=m/a kilometer=km; nanometers=nm/a meter=m; meters=m/a nautical mile=nautical_mile
feet=foot/a fathom=fathom; feet=foot/a furlong=furlong; furlongs=furlong/a mile=mile
kilometers=km/a light-year=light_year; grams=g/a kilogram=kg; milligrams=mg/a gram=g
kilograms=kg/a metric ton=tonne; ounces=ounce/a pound=pound; pounds=pound/a stone=stone
grams=g/an ounce=ounce; pounds=pound/a kilogram=kg; kilograms=kg/a pound=pound
grams=g/a pound=pound; pounds=pound/a US short ton=short_ton
pounds=pound/a British long ton=long_ton; milligrams=mg/a carat=carat; milliliters=mL/a liter=L
cubic centimeters=cm**3/a liter=L; liters=L/a cubic meter=m**3
US fluid ounces=fluid_ounce/a US gallon=gallon; US pints=pint/a US gallon=gallon
US quarts=quart/a US gallon=gallon; US cups=cup/a US pint=pint; tablespoons=tablespoon/a US cup=cup
teaspoons=teaspoon/a tablespoon=tablespoon; liters=L/a US gallon=gallon
liters=L/an imperial gallon=imperial_gallon
imperial pints=imperial_pint/an imperial gallon=imperial_gallon
imperial fluid ounces=imperial_fluid_ounce/an imperial pint=imperial_pint
US fluid ounces=fluid_ounce/a US pint=pint; milliliters=mL/a US fluid ounce=fluid_ounce
cubic inches=inch**3/a US gallon=gallon; US gallons=gallon/a barrel of oil=oil_barrel
seconds=s/a minute=minute; minutes=minute/an hour=hour; seconds=s/an hour=hour; hours=hour/a day=day
seconds=s/a day=day; days=day/a week=week; years=year/a century=century
years=year/a millennium=millennium; square feet=foot**2/a square yard=yard**2
square inches=inch**2/a square foot=foot**2; square meters=m**2/a hectare=hectare
hectares=hectare/a square kilometer=km**2; square feet=foot**2/an acre=acre
acres=acre/a square mile=mile**2; bits=bit/a byte=byte; bytes=byte/a kibibyte=kibibyte
joules=J/a kilowatt-hour=kWh; watts=W/a kilowatt=kW; pascals=Pa/a bar=bar
pascals=Pa/a standard atmosphere=atm; millimeters of mercury=mmHg/a standard atmosphere=atm
pounds per square inch=psi/a standard atmosphere=atm; degrees=degree/a radian=radian
arcminutes=arcminute/a degree=degree; degrees=degree/a full circle=turn
kilometers per hour=km/h/a knot=knot; milliseconds=ms/a second=s; acres=acre/a hectare=hectare
"""

# "Title|Author[|aliases (default: surname; '-': none)[|kind (default: novel)]]", ";"-separated.
AUTHORS = """
Pride and Prejudice|Jane Austen; Oliver Twist|Charles Dickens; Hamlet|William Shakespeare||play
Jane Eyre|Charlotte Brontë|-; Wuthering Heights|Emily Brontë|-; Middlemarch|George Eliot|-
Tess of the d'Urbervilles|Thomas Hardy; Dracula|Bram Stoker; Treasure Island|Robert Louis Stevenson
The Picture of Dorian Gray|Oscar Wilde
The Hound of the Baskervilles|Arthur Conan Doyle|Conan Doyle,Doyle; Ulysses|James Joyce
The Time Machine|H. G. Wells; Heart of Darkness|Joseph Conrad||novella
The Jungle Book|Rudyard Kipling||book; Alice's Adventures in Wonderland|Lewis Carroll||book
Mrs Dalloway|Virginia Woolf; Brave New World|Aldous Huxley; Nineteen Eighty-Four|George Orwell
Lord of the Flies|William Golding; A Clockwork Orange|Anthony Burgess
The Remains of the Day|Kazuo Ishiguro; The Hobbit|J. R. R. Tolkien; Frankenstein|Mary Shelley|-
Harry Potter and the Philosopher's Stone|J. K. Rowling
The Lion, the Witch and the Wardrobe|C. S. Lewis|-; Robinson Crusoe|Daniel Defoe
Gulliver's Travels|Jonathan Swift; Ivanhoe|Walter Scott|-; Paradise Lost|John Milton||epic poem
The Canterbury Tales|Geoffrey Chaucer||book; The Scarlet Letter|Nathaniel Hawthorne
Moby-Dick|Herman Melville; Uncle Tom's Cabin|Harriet Beecher Stowe
Adventures of Huckleberry Finn|Mark Twain|Twain,Samuel Clemens; Lolita|Vladimir Nabokov
The Great Gatsby|F. Scott Fitzgerald; The Old Man and the Sea|Ernest Hemingway||novella
The Sound and the Fury|William Faulkner; The Grapes of Wrath|John Steinbeck
The Catcher in the Rye|J. D. Salinger; To Kill a Mockingbird|Harper Lee; Fahrenheit 451|Ray Bradbury
Catch-22|Joseph Heller; Slaughterhouse-Five|Kurt Vonnegut; Beloved|Toni Morrison
Little Women|Louisa May Alcott; The Call of the Wild|Jack London|-
Gone with the Wind|Margaret Mitchell; The Handmaid's Tale|Margaret Atwood
Anne of Green Gables|Lucy Maud Montgomery|Montgomery,L. M. Montgomery; Life of Pi|Yann Martel
War and Peace|Leo Tolstoy; Crime and Punishment|Fyodor Dostoevsky|Dostoevsky,Dostoyevsky
Dead Souls|Nikolai Gogol; The Master and Margarita|Mikhail Bulgakov; Doctor Zhivago|Boris Pasternak
Les Misérables|Victor Hugo; Madame Bovary|Gustave Flaubert; The Red and the Black|Stendhal
The Count of Monte Cristo|Alexandre Dumas; Twenty Thousand Leagues Under the Seas|Jules Verne
The Plague|Albert Camus; The Little Prince|Antoine de Saint-Exupéry|Saint-Exupéry||novella
Candide|Voltaire||novella; The Magic Mountain|Thomas Mann; The Trial|Franz Kafka
Siddhartha|Hermann Hesse; All Quiet on the Western Front|Erich Maria Remarque
The Tin Drum|Günter Grass; The Sorrows of Young Werther|Johann Wolfgang von Goethe|Goethe
The Unbearable Lightness of Being|Milan Kundera; Don Quixote|Miguel de Cervantes|Cervantes
The Divine Comedy|Dante Alighieri|Dante,Alighieri|epic poem; The Decameron|Giovanni Boccaccio||book
The Name of the Rose|Umberto Eco; The Adventures of Pinocchio|Carlo Collodi
The Prince|Niccolò Machiavelli||book; A Doll's House|Henrik Ibsen||play
Pippi Longstocking|Astrid Lindgren||book; The Girl with the Dragon Tattoo|Stieg Larsson
One Hundred Years of Solitude|Gabriel García Márquez|García Márquez,Márquez
The House of the Spirits|Isabel Allende; The Alchemist|Paulo Coelho; Things Fall Apart|Chinua Achebe
Half of a Yellow Sun|Chimamanda Ngozi Adichie; Cry, the Beloved Country|Alan Paton
The Kite Runner|Khaled Hosseini; My Name Is Red|Orhan Pamuk; Midnight's Children|Salman Rushdie
The God of Small Things|Arundhati Roy; Journey to the West|Wu Cheng'en|Wu Chengen
Dream of the Red Chamber|Cao Xueqin|-; The Tale of Genji|Murasaki Shikibu|Murasaki
Norwegian Wood|Haruki Murakami; Kokoro|Natsume Sōseki|Sōseki; The Odyssey|Homer||epic poem
The Aeneid|Virgil|Vergil|epic poem; The Art of War|Sun Tzu|Sunzi|book; Disgrace|J. M. Coetzee
"""
