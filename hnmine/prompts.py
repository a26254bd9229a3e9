"""Default prompts of the LLM judge. A leaf: the parameter models and the judge both read it."""

DEFAULT_SYSTEM = (
    'Judge whether the Document meets the requirements based on the Query and the Instruct provided. '
    'Note that the answer can only be "yes" or "no".'
)
DEFAULT_TEMPLATE = "<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {document}"
DEFAULT_INSTRUCTION = "Given a search query, judge whether the document is relevant to it"
# query-likelihood mode (UPR, Sachan et al. 2022): how likely the model finds the query after the document
QUERY_LIKELIHOOD_PROMPT = "Document: {document}\n\nWrite a search query that this document answers."
