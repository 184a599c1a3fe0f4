"""leaklib: the science behind the leak-companion book.

Chowdhury, Lee, Roy (2020), *Towards Understanding the Effect of Leak in Spiking Neural Networks*.
"""

__version__ = "0.1.0"
