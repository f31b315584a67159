@echo off
rem Registers iotpost-send.cmd to run every 5 minutes as the current user, whether logged on or not
rem (schtasks asks for the password once). Run from the folder that holds iotpost-send.cmd.
schtasks /Create /TN "iotpost send" /SC MINUTE /MO 5 /TR "\"%~dp0iotpost-send.cmd\"" /RU "%USERNAME%" /RP /F
