using System.Globalization;

using Google.Protobuf;

using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.Tokenizers;

using Quantization.Onnx.Protos;

using Quantization.Samples;

using Xunit.Abstractions;

using static Quantization.Onnx.Tests.TestGraphs;

namespace Quantization.Onnx.Tests;

/// <summary>AWQ on all-MiniLM-L6-v2, weight-only 4-bit in groups of 32: calibrated on the first 100 shipped sentences, compared on the other 200.</summary>
public class MiniLMAwqTests(ITestOutputHelper output)
{
    private readonly BertTokenizer _tokenizer = MiniLM.LoadTokenizer();
    private readonly string[] _calibration = [.. MiniLM.Sentences.Take(100)];
    private readonly string[] _evaluation = [.. MiniLM.Sentences.Skip(100)];

    [Fact]
    public async Task MiniLM_Awq_Int4Group32_BeatsRoundToNearest()
    {
        QuantizationScheme scheme = QuantizationScheme.Int4PerGroup(32);
        byte[] original = MiniLM.LoadModel();
        float[][] reference = Embed(original);

        // The weights dequantized back to float: what MatMulNBits at accuracy level 1 computes, at ORT's basic level.
        double[] perChannel = Report("RTN int4 per channel", reference, Embed(OnnxAwqTests.FakeQuantized(ModelProto.Parser.ParseFrom(original), scheme.WithGranularity(QuantizationGranularity.PerChannel(0)))));
        double[] rtn = Report("RTN int4 group 32", reference, Embed(OnnxAwqTests.FakeQuantized(ModelProto.Parser.ParseFrom(original), scheme)));

        OnnxModel scaled = OnnxModel.Parse(original);
        OnnxAwqResult scaledResult = await OnnxAwq.ApplyAsync(scaled, Data(), new AwqOptions { Scheme = scheme, Clip = false });
        double[] unchanged = Report("AWQ scales only, fp32", reference, Embed(scaled.Proto.ToByteArray()));
        Assert.True(unchanged.Min() > 0.99999, $"the scaled float model computes the same: worst cosine {unchanged.Min()}");
        double[] scalesOnly = Report("AWQ scales only, int4 group 32", reference, Embed(OnnxAwqTests.FakeQuantized(scaled.Proto, scheme)));

        OnnxModel model = OnnxModel.Parse(original);
        OnnxAwqResult result = await OnnxAwq.ApplyAsync(model, Data(), new AwqOptions { Scheme = scheme });
        Describe(result);
        double[] awq = Report("AWQ int4 group 32", reference, Embed(OnnxAwqTests.FakeQuantized(model.Proto, scheme)));

        // Every MatMul/Gemm with a constant weight is in a group (the attention output, FFN down and the pooler through an
        // explicit Mul): 4 per layer and the pooler. Of each layer's Q, K and V, the query and key projections are
        // recognised (their outputs meet in the MatMul before the Softmax) and not clipped.
        Assert.Empty(result.Skipped);
        Assert.Equal(25, result.Groups.Count);
        Assert.Equal(6, result.Groups.Count(g => g.Consumers.Count == 3));
        Assert.All(result.Groups, g => Assert.Equal(g.Consumers.Count == 3 ? 2 : 0, g.Unclipped.Count));
        Assert.Equal(scaledResult.Groups.Select(g => g.Alpha), result.Groups.Select(g => g.Alpha));
        // Measured (symmetric int4, basic level, mean / worst): RTN per channel 0.912 / 0.854, RTN group 32 0.957 / 0.934,
        // AWQ scales only 0.973 / 0.958, AWQ 0.977 / 0.964. Short of the issue's 0.99: the query/key/value group costs
        // the most (its errors pass through the softmax, which the per-layer loss does not see). Asymmetric groups of 32
        // (the reference's default) reach 0.982 (0.983 with DuoScaling).
        Assert.True(rtn.Average() > perChannel.Average());
        Assert.True(scalesOnly.Average() > rtn.Average() + 0.01, $"AWQ's scales: mean cosine {scalesOnly.Average()}, RTN {rtn.Average()}");
        Assert.True(awq.Average() > scalesOnly.Average() && awq.Min() > rtn.Min(), $"AWQ: mean cosine {awq.Average()}, worst {awq.Min()}; scales only {scalesOnly.Average()}, RTN worst {rtn.Min()}");

        ICalibrationDataSource<IReadOnlyCollection<NamedOnnxValue>> Data() => CalibrationDataSource.FromBatches(_calibration.Select(s => MiniLM.Feed(_tokenizer, s)));
    }

    private float[][] Embed(byte[] model)
    {
        using SessionOptions options = new() { GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_BASIC, IntraOpNumThreads = 1 };
        using InferenceSession session = new(model, options);
        return MiniLM.Embed(session, _tokenizer, _evaluation);
    }

    private double[] Report(string label, float[][] reference, float[][] embeddings)
    {
        double[] cosines = [.. embeddings.Select((e, i) => Cosine(reference[i], e))];
        output.WriteLine(Invariant($"MiniLM {label}, basic level: {cosines.Length} sentences, cosine mean {cosines.Average():F5}, worst {cosines.Min():F5}"));
        return cosines;
    }

    private void Describe(OnnxAwqResult result)
    {
        foreach (OnnxAwqGroup g in result.Groups)
        {
            output.WriteLine(Invariant($"  {g.Input} ({g.ProducerKind}) -> {string.Join(", ", g.Consumers)}: α {g.Alpha:F2} (error {g.SearchErrors[g.Alpha]:G3}, at α 0 {g.SearchErrors[0]:G3}), clip {string.Join(", ", g.ClipRatios.Select(c => Invariant($"{c.Value:F3}")))}"));
        }

        foreach (OnnxSkippedScaleGroup s in result.Skipped)
        {
            output.WriteLine($"  skipped {s.Input} ({string.Join(", ", s.Consumers)}): {s.Reason}");
        }
    }

    private static string Invariant(FormattableString text) => text.ToString(CultureInfo.InvariantCulture);
}
