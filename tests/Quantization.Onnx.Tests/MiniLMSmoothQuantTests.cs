using System.Globalization;

using Google.Protobuf;

using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.Tokenizers;

using Quantization.Samples;

using Xunit.Abstractions;

using static Quantization.Onnx.Tests.TestGraphs;

namespace Quantization.Onnx.Tests;

/// <summary>SmoothQuant on all-MiniLM-L6-v2: calibrated on the first 100 shipped sentences, compared on the other 200.</summary>
public class MiniLMSmoothQuantTests(ITestOutputHelper output)
{
    [Fact]
    public async Task MiniLM_SmoothQuant_KeepsTheFloatModel_AndHelpsStaticW8A8()
    {
        byte[] original = MiniLM.LoadModel();
        BertTokenizer tokenizer = MiniLM.LoadTokenizer();
        IReadOnlyList<string> sentences = MiniLM.Sentences;
        string[] calibration = [.. sentences.Take(100)], evaluation = [.. sentences.Skip(100)];
        Assert.True(evaluation.Length >= 200);
        float[][] reference = Embed(original);

        // Smoothing alone (α 0.5, then the search): the float model computes the same.
        OnnxModel half = OnnxModel.Parse(original);
        OnnxSmoothQuantResult halfResult = await OnnxSmoothQuant.SmoothAsync(half, Data());
        Report("α 0.5", halfResult);
        Assert.Equal(12, halfResult.Groups.Count); // in each of the 6 layers: attention's Q, K, V after one norm, the intermediate layer after the other
        Assert.All(halfResult.Groups, g => Assert.Equal(OnnxScaleProducerKind.DecomposedLayerNormalization, g.ProducerKind));
        AssertUnchanged("α 0.5", Embed(half.Proto.ToByteArray()));

        OnnxModel searched = OnnxModel.Parse(original);
        OnnxSmoothQuantResult searchedResult = await OnnxSmoothQuant.SmoothAsync(searched, Data(), new OnnxSmoothQuantOptions { SearchAlpha = true });
        Report("α searched", searchedResult);
        Assert.Equal(halfResult.Groups.Select(g => g.Input), searchedResult.Groups.Select(g => g.Input));
        Assert.All(searchedResult.Groups, g => Assert.True(g.SearchErrors![g.Alpha] <= g.SearchErrors[0.5], $"{g.Input}: the search must not do worse than α 0.5 on its own measure"));
        AssertUnchanged("α searched", Embed(searched.Proto.ToByteArray()));

        // The payoff: static W8A8 with the default activation rules (the inputs of MatMul and Gemm with a weight), at ORT's
        // default level; the searched recipe is the one ptq runs for --smoothquant auto (smoothing inside QuantizeAsync).
        // (Weights: see OrtInt8Kernels; smoothing makes more activations large, which the saturating u8 x s8 kernels punish.)
        double[] plain = await StaticW8A8("no smoothing", original, new OnnxStaticQuantizationOptions { Scheme = OrtInt8Kernels.WeightScheme });
        double[] withHalf = await StaticW8A8("SmoothQuant α 0.5", half.Proto.ToByteArray(), new OnnxStaticQuantizationOptions { Scheme = OrtInt8Kernels.WeightScheme });
        double[] withSearch = await StaticW8A8("SmoothQuant α searched", original, new OnnxStaticQuantizationOptions { Scheme = OrtInt8Kernels.WeightScheme, SmoothQuant = new OnnxSmoothQuantOptions { SearchAlpha = true } });
        Assert.True(withHalf.Average() > plain.Average() && withSearch.Average() > plain.Average(), "smoothing should improve the mean cosine of static W8A8");
        Assert.True(withSearch.Average() >= 0.995 && withSearch.Min() >= 0.99, $"static W8A8 with SmoothQuant: mean {withSearch.Average()}, worst {withSearch.Min()}");

        ICalibrationDataSource<IReadOnlyCollection<NamedOnnxValue>> Data() => CalibrationDataSource.FromBatches(calibration.Select(s => MiniLM.Feed(tokenizer, s)));

        float[][] Embed(byte[] bytes)
        {
            using SessionOptions options = new() { GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL, IntraOpNumThreads = 1 };
            using InferenceSession session = new(bytes, options);
            return MiniLM.Embed(session, tokenizer, evaluation);
        }

        void AssertUnchanged(string label, float[][] embeddings)
        {
            double[] cosines = [.. embeddings.Select((e, i) => Cosine(reference[i], e))];
            double error = embeddings.SelectMany((e, i) => e.Select((v, f) => Math.Abs(v - (double)reference[i][f]))).Max();
            output.WriteLine(Invariant($"MiniLM fp32 smoothed ({label}) vs fp32, default level: cosine worst {cosines.Min():F7}, largest abs error {error:E2}"));
            Assert.True(cosines.Min() > 0.99999, $"{label}: worst cosine {cosines.Min()}");
            Assert.True(error < 1e-3, $"{label}: largest embedding error {error}");
        }

        async Task<double[]> StaticW8A8(string label, byte[] bytes, OnnxStaticQuantizationOptions options)
        {
            OnnxModel model = OnnxModel.Parse(bytes);
            OnnxStaticQuantizationResult result = await OnnxStaticQuantizer.QuantizeAsync(model, Data(), options);
            double[] cosines = [.. Embed(model.Proto.ToByteArray()).Select((e, i) => Cosine(reference[i], e))];
            output.WriteLine(Invariant($"MiniLM static W8A8 ({result.Activations.Count} activations), {label}, default level: {evaluation.Length} sentences, cosine mean {cosines.Average():F6}, worst {cosines.Min():F6}"));
            return cosines;
        }
    }

    private void Report(string label, OnnxSmoothQuantResult result)
    {
        output.WriteLine(Invariant($"SmoothQuant {label}: {result.Groups.Count} groups folded, {result.Skipped.Count} skipped"));
        foreach (OnnxSmoothQuantGroup g in result.Groups)
        {
            output.WriteLine(Invariant($"  {g.Producer} ({g.ProducerKind}) -> {string.Join(", ", g.Consumers)}: α {g.Alpha:F2}, max|X| {g.MaxInputBefore:G4} -> {g.MaxInputAfter:G4}, max|W| {g.MaxWeightBefore:G4} -> {g.MaxWeightAfter:G4}{(g.RestoreNode is null ? "" : ", restored for other readers")}"));
        }

        foreach (OnnxSkippedScaleGroup s in result.Skipped)
        {
            output.WriteLine($"  skipped {s.Input} ({string.Join(", ", s.Consumers)}): {s.Reason}");
        }
    }

    private static string Invariant(FormattableString text) => text.ToString(CultureInfo.InvariantCulture);
}
