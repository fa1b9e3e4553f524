using System.Globalization;

using Google.Protobuf;

using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.Tokenizers;

using Quantization.Samples;

using Xunit.Abstractions;

using static Quantization.Onnx.Tests.TestGraphs;

namespace Quantization.Onnx.Tests;

/// <summary>Dynamic W8A8 after SmoothQuant on all-MiniLM-L6-v2: calibrated on the first 100 shipped sentences, compared with fp32 on the others at ORT's default level.</summary>
public class MiniLMDynamicSmoothQuantTests(ITestOutputHelper output)
{
    private readonly BertTokenizer _tokenizer = MiniLM.LoadTokenizer();
    private readonly string[] _calibration = [.. MiniLM.Sentences.Take(100)];
    private readonly string[] _evaluation = [.. MiniLM.Sentences.Skip(100)];

    [Fact]
    public async Task Dynamic_AfterSmoothQuant_WithExplicitScales_KeepsTheSentenceEmbeddings()
    {
        byte[] original = MiniLM.LoadModel();
        float[][] reference = Embed(original);

        // Explicit scales alone keep the float model: every quantized layer's input is smoothed, 12 groups by folding
        // into the normalizations, the others (FFN-down after Gelu, attention's output after Reshape, the pooler) by a Mul.
        OnnxModel smoothed = OnnxModel.Parse(original);
        OnnxSmoothQuantResult explicitResult = await OnnxSmoothQuant.SmoothAsync(smoothed, Data(), new OnnxSmoothQuantOptions { Alpha = 0.8, ExplicitScales = true });
        Assert.Empty(explicitResult.Skipped);
        Assert.Equal(12, explicitResult.Groups.Count(g => g.ProducerKind == OnnxScaleProducerKind.DecomposedLayerNormalization));
        Assert.Equal(13, explicitResult.Groups.Count(g => g.ProducerKind == OnnxScaleProducerKind.ExplicitScale));
        double[] exact = Cosines(reference, Embed(smoothed.Proto.ToByteArray()));
        output.WriteLine(Invariant($"MiniLM fp32 smoothed with explicit scales (α 0.8) vs fp32: cosine worst {exact.Min():F7}"));
        Assert.True(exact.Min() > 0.99999, $"worst cosine {exact.Min()}");

        // The smoothed float model, quantized: what QuantizeAsync does with a fixed α (the search is the only part that differs).
        OnnxDynamicQuantizer.Quantize(smoothed, new OnnxDynamicQuantizationOptions { Scheme = OrtInt8Kernels.WeightScheme });
        double[] explicit08 = Report("SmoothQuant α 0.8, explicit scales", Embed(smoothed.Proto.ToByteArray()));

        double[] explicit05 = await Dynamic("SmoothQuant α 0.5, explicit scales", new OnnxSmoothQuantOptions { Alpha = 0.5, ExplicitScales = true });
        double[] explicitAuto = await Dynamic("SmoothQuant α searched, explicit scales", new OnnxSmoothQuantOptions { SearchAlpha = true, ExplicitScales = true });
        double[] folded05 = await Dynamic("SmoothQuant α 0.5, folded only", new OnnxSmoothQuantOptions { Alpha = 0.5 });
        double[] folded08 = await Dynamic("SmoothQuant α 0.8, folded only", new OnnxSmoothQuantOptions { Alpha = 0.8 });
        double[] foldedAuto = await Dynamic("SmoothQuant α searched, folded only", new OnnxSmoothQuantOptions { SearchAlpha = true });

        // Measured at the default level on the 200 held-out sentences (mean / worst), against 0.9931 / 0.988 without smoothing:
        // explicit scales α 0.5 0.9875 / 0.9746, α 0.8 0.9979 / 0.9931, searched 0.99805 / 0.9835;
        // folded only (12 groups) α 0.5 0.9960 / 0.9924, α 0.8 0.9962 / 0.9924, searched 0.9962 / 0.9927.
        // Only the searched α with explicit scales reaches the issue's mean of 0.998 (its worst sentence is lower than at α 0.8).
        Assert.True(explicitAuto.Average() >= 0.998, $"α searched with explicit scales: mean cosine {explicitAuto.Average()}");
        Assert.True(explicit08.Average() >= 0.997 && explicit08.Min() >= 0.99, $"α 0.8 with explicit scales: mean {explicit08.Average()}, worst {explicit08.Min()}");
        Assert.True(new[] { folded05, folded08, foldedAuto }.All(c => c.Average() >= 0.995 && c.Average() < explicitAuto.Average()), "folding alone helps dynamic quantization, but less than smoothing every layer");
        Assert.True(explicit05.Average() < folded05.Average(), "at α 0.5 the explicit groups (after Gelu) lose more in their weights than they gain: if this changes, the advice on --explicit-scales is stale");

        ICalibrationDataSource<IReadOnlyCollection<NamedOnnxValue>> Data() => CalibrationDataSource.FromBatches(_calibration.Select(s => MiniLM.Feed(_tokenizer, s)));

        async Task<double[]> Dynamic(string label, OnnxSmoothQuantOptions smoothQuant)
        {
            OnnxModel model = OnnxModel.Parse(original);
            OnnxDynamicQuantizationResult result = await OnnxDynamicQuantizer.QuantizeAsync(model, Data(), new OnnxDynamicQuantizationOptions { Scheme = OrtInt8Kernels.WeightScheme, SmoothQuant = smoothQuant });
            Assert.Equal(38, result.Weights.Count); // 36 MatMul weights, the pooler's Gemm and the word embeddings
            OnnxSmoothQuantResult groups = result.SmoothQuant!;
            output.WriteLine(Invariant($"  {label}: {groups.Groups.Count} groups smoothed, {groups.Skipped.Count} skipped; α {string.Join(" ", groups.Groups.Select(g => g.Alpha.ToString("0.##", CultureInfo.InvariantCulture)))}"));
            return Report(label, Embed(model.Proto.ToByteArray()));
        }

        double[] Report(string label, float[][] embeddings)
        {
            double[] cosines = Cosines(reference, embeddings);
            output.WriteLine(Invariant($"MiniLM dynamic W8A8, {label}, default level: {_evaluation.Length} sentences, cosine mean {cosines.Average():F6}, worst {cosines.Min():F6}"));
            return cosines;
        }
    }

    private static double[] Cosines(float[][] reference, float[][] embeddings) => [.. embeddings.Select((e, i) => Cosine(reference[i], e))];

    private static string Invariant(FormattableString text) => text.ToString(CultureInfo.InvariantCulture);

    private float[][] Embed(byte[] bytes)
    {
        using SessionOptions options = new() { GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL, IntraOpNumThreads = 1 };
        using InferenceSession session = new(bytes, options);
        return MiniLM.Embed(session, _tokenizer, _evaluation);
    }
}
