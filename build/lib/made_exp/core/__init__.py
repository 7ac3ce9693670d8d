"""The maths: MADE, its masks, scoring, normalisers and samplers. Imports only torch."""
