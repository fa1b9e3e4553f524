using BenchmarkDotNet.Attributes;

using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.Tokenizers;

using Quantization.Onnx;
using Quantization.Samples;

namespace Quantization.Benchmarks;

/// <summary>
/// all-MiniLM-L6-v2 in ONNX Runtime on one sentence, one intra-op thread, ONNX Runtime's default optimisation level:
/// fp32 against the quantized models this library writes (static W8A8 with the default activation rules, with and without
/// SmoothQuant's per-channel Muls, calibrated on 20 other sentences; dynamic W8A8, weight-only QDQ, weight-only MatMulNBits with
/// blocks of 32 and 128 at accuracy level 4, and of 32 at level 1). Weight-only and dynamic weights are rounded to nearest (no
/// calibration): bias correction changes no speed.
/// </summary>
[Config(typeof(KernelBenchmarkConfig))]
public class MiniLMOrtBenchmarks : IDisposable
{
    private InferenceSession? _session;
    private IReadOnlyCollection<NamedOnnxValue>? _feed;
    private readonly string[] _outputs = ["last_hidden_state"];

    [GlobalSetup(Target = nameof(Fp32))]
    public void SetupFp32() => Setup(model => { });

    [GlobalSetup(Target = nameof(StaticW8A8))]
    public void SetupStaticW8A8() => Setup(model => OnnxStaticQuantizer.QuantizeAsync(model, Calibration()).GetAwaiter().GetResult());

    [GlobalSetup(Target = nameof(StaticW8A8SmoothQuant))]
    public void SetupStaticW8A8SmoothQuant() => Setup(model => OnnxStaticQuantizer.QuantizeAsync(model, Calibration(), new OnnxStaticQuantizationOptions { SmoothQuant = new OnnxSmoothQuantOptions() }).GetAwaiter().GetResult());

    [GlobalSetup(Target = nameof(Dynamic))]
    public void SetupDynamic() => Setup(model => OnnxDynamicQuantizer.Quantize(model));

    [GlobalSetup(Target = nameof(WeightOnlyQdq))]
    public void SetupWeightOnlyQdq() => Setup(model => OnnxWeightQuantizer.Quantize(model));

    [GlobalSetup(Target = nameof(WeightOnlyMatMulNBits))]
    public void SetupWeightOnlyMatMulNBits() => Setup(model => OnnxWeightQuantizer.Quantize(model, new OnnxWeightQuantizationOptions { MatMulNBits = new MatMulNBitsOptions() }));

    [GlobalSetup(Target = nameof(WeightOnlyMatMulNBitsBlock128))]
    public void SetupWeightOnlyMatMulNBitsBlock128() => Setup(model => OnnxWeightQuantizer.Quantize(model, new OnnxWeightQuantizationOptions { MatMulNBits = new MatMulNBitsOptions { BlockSize = 128 } }));

    [GlobalSetup(Target = nameof(WeightOnlyMatMulNBitsFp32Arithmetic))]
    public void SetupWeightOnlyMatMulNBitsFp32Arithmetic() => Setup(model => OnnxWeightQuantizer.Quantize(model, new OnnxWeightQuantizationOptions { MatMulNBits = new MatMulNBitsOptions { AccuracyLevel = 1 } }));

    [Benchmark(Baseline = true)]
    public void Fp32() => Run();

    [Benchmark]
    public void StaticW8A8() => Run();

    [Benchmark]
    public void StaticW8A8SmoothQuant() => Run();

    [Benchmark]
    public void Dynamic() => Run();

    [Benchmark]
    public void WeightOnlyQdq() => Run();

    /// <summary>Blocks of 32, accuracy level 4 (int8 activations per block): the defaults.</summary>
    [Benchmark]
    public void WeightOnlyMatMulNBits() => Run();

    [Benchmark]
    public void WeightOnlyMatMulNBitsBlock128() => Run();

    /// <summary>Blocks of 32, accuracy level 1: fp32 arithmetic.</summary>
    [Benchmark]
    public void WeightOnlyMatMulNBitsFp32Arithmetic() => Run();

    [GlobalCleanup]
    public void Dispose()
    {
        _session?.Dispose();
        _session = null;
        GC.SuppressFinalize(this);
    }

    private void Run()
    {
        using IDisposableReadOnlyCollection<DisposableNamedOnnxValue> result = _session!.Run(_feed!, _outputs);
    }

    private static ICalibrationDataSource<IReadOnlyCollection<NamedOnnxValue>> Calibration()
    {
        BertTokenizer tokenizer = MiniLM.LoadTokenizer();
        return CalibrationDataSource.FromBatches(MiniLM.Sentences.Take(20).Select(s => MiniLM.Feed(tokenizer, s)));
    }

    private void Setup(Action<OnnxModel> quantize)
    {
        BertTokenizer tokenizer = MiniLM.LoadTokenizer();
        _feed = MiniLM.Feed(tokenizer, MiniLM.Sentences[150]);
        OnnxModel model = OnnxModel.Parse(MiniLM.LoadModel());
        quantize(model);
        using SessionOptions options = new() { IntraOpNumThreads = 1, InterOpNumThreads = 1, ExecutionMode = ExecutionMode.ORT_SEQUENTIAL };
        _session = new InferenceSession(Google.Protobuf.MessageExtensions.ToByteArray(model.Proto), options);
    }
}
