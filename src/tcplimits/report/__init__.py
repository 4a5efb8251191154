"""Stage 5, report: the dataset read, set against the model, and rendered as one HTML page.

    findings   the face report.qmd (beside them) calls: one function per block of the page
    data       the dataset loaded (``Data``) and the frames the sections and charts share
    sections/  one module per section: runset, hold, fourtuple, million, churn, conclusion
    blocks     what a cell shows (``Blocks``) and the report's one way to word a count
    charts     Altair charts, rendered offline (vl-convert)
    render     .qmd -> HTML with Quarto, or without it (jupytext, nbclient, nbconvert)
    browser    the page opened in headless Chromium: every chart drawn, no request made
    template/  the fallback renderer's HTML template and stylesheet
"""
