"""Who is where: this worker's connections, presence per room and typing.

Below the domain: it knows neither `rooms` nor `server`, only plain ids and user cards.
"""
