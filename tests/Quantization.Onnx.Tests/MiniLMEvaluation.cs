using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.Tokenizers;

using Quantization.Samples;

using Xunit.Abstractions;

using static Quantization.Onnx.Tests.TestGraphs;

namespace Quantization.Onnx.Tests;

/// <summary>
/// The issues' protocol on all-MiniLM-L6-v2: calibrate on the first 100 shipped sentences, embed the other 200 with a
/// model on one thread, and report each sentence's cosine against the fp32 embedding.
/// </summary>
internal sealed class MiniLMEvaluation(ITestOutputHelper output)
{
    public BertTokenizer Tokenizer { get; } = MiniLM.LoadTokenizer();

    public string[] Sentences { get; } = [.. MiniLM.Sentences.Skip(100)];

    /// <summary>Gets feeds of the 100 calibration sentences, one batch each.</summary>
    public ICalibrationDataSource<IReadOnlyCollection<NamedOnnxValue>> Calibration =>
        CalibrationDataSource.FromBatches(MiniLM.Sentences.Take(100).Select(s => MiniLM.Feed(Tokenizer, s)));

    public float[][] Embed(byte[] bytes, GraphOptimizationLevel level)
    {
        using SessionOptions options = new() { GraphOptimizationLevel = level, IntraOpNumThreads = 1 };
        using InferenceSession session = new(bytes, options);
        return MiniLM.Embed(session, Tokenizer, Sentences);
    }

    public double[] Report(string label, float[][] reference, float[][] embeddings)
    {
        double[] cosines = [.. embeddings.Select((e, i) => Cosine(reference[i], e))];
        output.WriteLine(FormattableString.Invariant($"MiniLM {label}: {Sentences.Length} sentences, cosine mean {cosines.Average():F6}, worst {cosines.Min():F6}"));
        return cosines;
    }
}
