"""CoLLM-FaissRet companion library: data, collaborative models, FECE, LLM training, Faiss retrieval."""

__version__ = "0.1.0"
